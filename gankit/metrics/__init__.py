"""Sample quality: Frechet distance, classifier score, class coverage, `gankit eval`."""
