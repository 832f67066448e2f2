"""The command-line interface: click commands, one small module each; exit codes in exits.py."""
