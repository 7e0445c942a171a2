"""Run folders: layout and file names, artifact I/O, integrity, locking, failures, fault points."""
