"""The data coming in: readers for every listing and covers format, image probing, the Great
Expectations validation and quarantine, the genre taxonomies, and the embedded generated data set."""
