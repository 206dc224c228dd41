"""`python -m lcfin` runs the CLI."""

from lcfin.cli import main

main()
