"""``python -m nnplug``: the same as the ``nnplug`` command."""

from nnplug.cli import entry

if __name__ == "__main__":
    entry()
