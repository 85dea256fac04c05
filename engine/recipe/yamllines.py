"""Lines as an editor shows them: every place an error names counts lines at "\\n" only.

YAML readers also break lines at U+2028, U+2029, U+0085 (libyaml) and a lone "\\r" (libyaml and
ruamel), where an editor and the loader's own byte errors (`_line_col`) do not: an error after
such a character named a line one past the one the user sees. A text holding one is read by
ruamel (yamlfast.py hands it over), whose marks `Reader` re-counts from their character index.
"""
from __future__ import annotations

import functools
import re
from bisect import bisect_right
from typing import Any

ODD_BREAK = re.compile("\r(?!\n)|[\x85\u2028\u2029]")  # "\r\n" is one break for everyone


@functools.cache
def reader() -> type:
    """ruamel's Reader, with marks (error places, `.lc`) at the editor's line and column. Its own
    `line` and `column` stay YAML's: the scanner reads the indentation from them."""
    from ruamel.yaml.reader import Reader

    class EditorLines(Reader):
        _starts: list[int] = []  # where each "\n"-line starts, for a text with an odd break
        _of: Any = None  # the buffer _starts is for

        def get_mark(self) -> Any:
            mark = super().get_mark()
            if self._of is not self.buffer:
                self._of = self.buffer
                self._starts = [0, *(m.end() for m in re.finditer("\n", self.buffer))] \
                    if ODD_BREAK.search(self.buffer) else []
            if self._starts:
                line = bisect_right(self._starts, mark.index) - 1
                bom = line == 0 and self.buffer.startswith("\ufeff")  # not a column, as ruamel counts
                mark.line, mark.column = line, mark.index - self._starts[line] - bom
            return mark

    return EditorLines
