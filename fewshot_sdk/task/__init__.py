"""The task layer: an adapted task, its task network and its saved folder; it knows no method."""
