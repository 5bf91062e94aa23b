"""Video input: frame sources (files, frame folders, streams) and their cutting into snippets."""
