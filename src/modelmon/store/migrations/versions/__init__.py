"""One file per revision, in one linear chain; a feature adds its tables in a new one."""
