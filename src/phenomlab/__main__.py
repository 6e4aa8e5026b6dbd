"""``python -m phenomlab``: the same command line as the ``phenomlab`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
