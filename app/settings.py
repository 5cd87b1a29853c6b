"""Runtime configuration, read from ``GESTALTLENS_*`` environment variables.

Embedded defaults (SQLite under the data directory, the bundled demo model, in-process jobs) make a
fresh install run with no configuration at all; deployments override through the environment.
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GESTALTLENS_", extra="ignore")

    data_dir: Path = Field(default=PROJECT_ROOT / "var")
    database_url: str | None = None
    # Seconds a request waits for a pooled database connection before answering 503 database_busy. Requests
    # hold a connection only while they talk to the database, never while they compute.
    database_pool_timeout_s: float = 30.0
    # /readyz reports the storage full (503 storage_full) below this much free space under the data directory.
    min_free_mb: float = 64.0
    model: str = "demo"
    models_dir: Path = Field(default=PROJECT_ROOT / "models")
    job_runner: str = "inline"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # The broker queue web apps publish to and workers consume; separate deployments (or test runs) sharing
    # one Redis must use different queues, or one's worker would take the other's jobs.
    job_queue: str = "gestaltlens"
    max_upload_mb: float = 15.0
    max_pixels: int = 40_000_000
    secret_key: str | None = None
    # Set when served behind https so the session cookie carries the Secure flag.
    secure_cookies: bool = False
    session_hours: int = 12
    login_max_failures: int = 5
    login_lockout_minutes: int = 15
    # Jobs (see README "Jobs"): a running job whose heartbeat is older than job_lease_s may be taken over and
    # counts as lost; the broker re-delivers a dead worker's unacknowledged message after
    # job_visibility_timeout_s. Together they bound how long a killed worker's job stays "running".
    job_lease_s: float = Field(default=90.0, gt=0)
    job_visibility_timeout_s: float = Field(default=300.0, gt=0)
    # Explanation jobs one user may have waiting or running at once (each is bounded in cost as well).
    max_active_jobs: int = Field(default=8, ge=1)
    # Upload folders without a case row older than this are removed at start-up (a crash between writing the
    # files and committing the row); younger ones may belong to an upload still in flight in another process.
    orphan_grace_s: float = Field(default=600.0, ge=0)
    # Where explanation workers run the attribution engine: "auto" (CUDA when this process sees a GPU, else the
    # CPU), "cpu", "cuda" or "cuda:N". Checked for form here; app.explain.engine.resolve_device checks the GPU.
    device: str = "auto"
    # Explanation compute mode when a request names none (app.explain.fast): "exact" (naive Captum's maps) or
    # "fast" (measured approximations for the methods offered in fast mode; every map records its mode).
    explain_mode: Literal["exact", "fast"] = "exact"
    # Read the served model in a background thread when the app starts, so the first clinician's upload does not
    # wait for it (a GestaltMatcher model with a large gallery takes most of a minute to read); requests that need
    # the model meanwhile wait for that one load. Off, the model is read by the first request that needs it.
    preload_model: bool = True
    # Derived group data (composites, syndrome-wise maps) needs this many distinct patients; never below 5.
    cohort_min_patients: int = Field(default=5, ge=5)

    @field_validator("job_runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        if value not in {"inline", "celery"}:
            raise ValueError("GESTALTLENS_JOB_RUNNER must be 'inline' or 'celery'")
        return value

    @model_validator(mode="after")
    def _visibility_exceeds_lease(self) -> Settings:
        # A message re-delivered before the lease ran out would find the job "busy" and only retry later.
        if self.job_visibility_timeout_s <= self.job_lease_s:
            raise ValueError("GESTALTLENS_JOB_VISIBILITY_TIMEOUT_S must be longer than GESTALTLENS_JOB_LEASE_S")
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        device = value.strip().lower()
        if re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", device) is None:
            raise ValueError(f"GESTALTLENS_DEVICE must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index); "
                             f"got {value!r}")
        return device

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def photo_dir(self) -> Path:
        return self.data_dir / "photos"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gestaltlens.db').as_posix()}"

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.photo_dir.mkdir(parents=True, exist_ok=True)

    @property
    def resolved_secret_key(self) -> str:
        """The configured key, or one generated on first use and kept in the data dir.

        Persisting it means restarts keep CSRF tokens valid without anyone having to invent a secret.
        """
        if self.secret_key:
            return self.secret_key
        self.ensure_dirs()
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
