"""The `uda-adapt` command line, above adapt/ (train), export/ and runtime/ (run, bench).

Each module holds one area's click commands, thin wrappers over plain functions; `cli.main`
is the entry point.
"""
