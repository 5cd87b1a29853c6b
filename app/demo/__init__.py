"""First-run demo: a newcomer loads the synthetic demo cohort (app.cohorts.demo) from the case list."""
