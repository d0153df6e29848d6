"""The command line: the only module tree that imports click or writes to the terminal."""
