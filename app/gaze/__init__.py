"""Where people look: participants (codes, never names), fixation imports from eye trackers and from the
browser's restricted-focus viewer, and their comparison with the attribution maps."""
