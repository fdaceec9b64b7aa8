"""Live model quality: the prediction log, ground-truth labels, and label-free estimates."""
