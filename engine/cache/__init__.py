"""The content-addressed cache: step keys, content digests, the store of entries and run
records, locks and leases, readable links under artifacts/, remotes (push/pull), step source
digests, and the scrubbing of secrets before anything is written.

May import `engine.recipe`; never `engine.run` or `engine.cli`.
"""
