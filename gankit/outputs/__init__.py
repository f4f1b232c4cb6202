"""What a run leaves behind: exports, sample grids, metrics files and trackers."""
