"""`python -m edgeq.host` is the same as the `edgeq` command."""
from edgeq.host.cli import main

if __name__ == "__main__":
    main()
