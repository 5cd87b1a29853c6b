"""Import every domain's ORM module so ``Base.metadata`` is complete (Alembic and tests rely on it)."""

from app.audit import models as audit_models
from app.auth import models as auth_models
from app.cases import models as case_models
from app.cohorts import models as cohort_models
from app.db import Base
from app.diagnoses import models as diagnosis_models
from app.evaluations import models as evaluation_models
from app.explanations import models as explanation_models
from app.gaze import models as gaze_models
from app.jobs import models as job_models
from app.matching import models as matching_models
from app.phenotypes import models as phenotype_models
from app.predictions import models as prediction_models
from app.ratings import models as rating_models
from app.studies import models as study_models

__all__ = [
    "Base",
    "audit_models",
    "auth_models",
    "case_models",
    "cohort_models",
    "diagnosis_models",
    "evaluation_models",
    "explanation_models",
    "gaze_models",
    "job_models",
    "matching_models",
    "phenotype_models",
    "prediction_models",
    "rating_models",
    "study_models",
]
