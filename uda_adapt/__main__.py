"""`python -m uda_adapt ...`: the `uda-adapt` command line."""

from uda_adapt.cli.main import run

if __name__ == "__main__":
    run()
