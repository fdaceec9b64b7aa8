"""``modelmon demo``: synthetic churn data (``data``) and the end-to-end run (``run``)."""
