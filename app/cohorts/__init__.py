"""Research cohorts: composites and syndrome-wise maps over the cases a user may see (issue 9)."""
