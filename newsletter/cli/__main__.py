"""`python -m newsletter.cli`, as the tests and benchmarks run it."""

from . import main

if __name__ == "__main__":
    main()
