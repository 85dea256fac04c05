"""Data steps: `data.load` (Hub datasets and local files, load.py), `data.from_file`
(from_file.py), and small in-memory transforms: map, concat, split, sample (transforms.py)."""
