"""`python -m stackprobe` runs the CLI."""

from stackprobe.cli import main

main()
