"""Settings read from the environment, with defaults that work on one machine: every ARENA_* variable
the server and the workers read is read here (the CLI client's own ARENA_SERVER / ARENA_TOKEN /
ARENA_CONFIG / ARENA_USER are the command line's, see `arena login`). docs/settings.md holds this table.

| variable | default | meaning |
|---|---|---|
| ARENA_HOME | ~/.arena | data directory: database, uploads, case store, work dirs |
| ARENA_DATABASE_URL | sqlite:///$ARENA_HOME/arena.db | SQLAlchemy URL (PostgreSQL in production) |
| ARENA_REDIS_URL | redis://127.0.0.1:6379/0 | Redis for the RQ queues |
| ARENA_QUEUE | arena | RQ queue name evaluations go to |
| ARENA_MAX_UPLOAD_BYTES | 8 GiB | largest accepted upload (bytes) |
| ARENA_UPLOAD_RESERVATION_S | 600 | an upload holds its quota slot this long after its last bytes arrived (seconds) |
| ARENA_SECRET_KEY | kept in ARENA_HOME/.secret_key | Flask session key (every web process and restart shares it) |
| ARENA_SECURE_COOKIES | off | "1": session and remember cookies only over HTTPS (set it behind TLS) |
| ARENA_REMEMBER_DAYS | 14 | "keep me signed in" lasts this many days (sign-out, a password change or disabling ends it sooner) |
| ARENA_SIGNIN_RATE | 10 | failed sign-ins per account from one address per 15 minutes; then 429 for that pair only |
| ARENA_SIGNIN_ADDRESS_RATE | 50 | failed sign-ins from one address per 15 minutes, all accounts together |
| ARENA_SIGNIN_ACCOUNT_RATE | 100 | failed sign-ins on one account per 15 minutes, all addresses together |
| ARENA_SIGNUP_RATE | 10 | sign-up attempts from one address per hour |
| ARENA_UPLOAD_RATE | 6 | uploads per user per minute (beside each phase's submission quota) |
| ARENA_PROXY_HOPS | 0 | reverse proxies in front of `arena serve` whose X-Forwarded-For/-Proto to trust (0: none, the peer address counts) |
| ARENA_IMAGE_CACHE_GB | 50 | disk budget for submission images on each worker (least recently used removed) |
| ARENA_VIEWER_CACHE_GB | 4 | disk budget for the case viewer's decoded volumes (ARENA_HOME/viewer-cache; least recently used removed) |
| ARENA_ROOT_IMAGES | nobody | an image whose USER is root: run it as nobody (65534), or "reject" it at upload |
| ARENA_TEAM_CONCURRENCY | 1 | evaluations of one team that may run at once (0: no limit); the others wait, other teams go first |
| ARENA_HEARTBEAT_S | 10 | how often a running evaluation reports that it is alive (seconds) |
| ARENA_STALE_AFTER_S | 120 | a running evaluation with no heartbeat for this long is re-queued by any worker (seconds) |
| ARENA_ENGINE_WAIT_S | 120 | how long a job waits for its Docker engine to come back after it went away mid-case (seconds) |
| ARENA_IMPORT_ROOTS | ARENA_HOME/import | ':'-separated folders organizers may load cases from on the web |
| ARENA_SHARED_DATA | ../shared/data beside the repository | the real-data root the task loaders read (never copied into the repository) |
| ARENA_REFERENCE_MODELS | reference_models/ of the repository | the bundled reference models' folder |
| ARENA_DEBIAN_MIRROR | the host's apt sources | the Debian mirror the base image is built from |
| ARENA_GPU_DEVICES | every GPU NVML sees | GPU(s) a worker owns ("0" or "0,1"; `arena worker --gpu` sets it) |
| ARENA_RUN_DIR | $TMPDIR/arena-runs | parent of the random per-run folders mounted as a container's /input and /output (outside ARENA_HOME, so a container learns no store path) |
| ARENA_SITE_TOKEN | none | a site worker's token (`arena site-worker --token` wins over it) |
| ARENA_SITE_DATA | ARENA_HOME/site-data | a site worker's case folder: `<task>/<phase>/` in the `arena task import-cases` layout |
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    redis_url: str
    queue_name: str = "arena"
    max_upload_bytes: int = 8 * 1024**3
    remember_days: float = 14.0
    signin_rate: int = 10  # failures per (account, address) per 15 min
    signin_address_rate: int = 50  # failures per address per 15 min
    signin_account_rate: int = 100  # failures per account per 15 min
    signup_rate: int = 10  # sign-up attempts per address per hour
    upload_rate: int = 6  # uploads per user per minute
    proxy_hops: int = 0  # trusted reverse proxies (X-Forwarded-For); 0: none
    upload_reservation_s: float = 600.0  # a stalled or dead upload gives its quota slot back after this
    root_images: str = "nobody"  # "nobody" | "reject"
    image_cache_bytes: int = 50 * 1024**3
    viewer_cache_bytes: int = 4 * 1024**3
    team_concurrency: int = 1
    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0
    engine_wait_s: float = 120.0  # how long a job waits for its Docker engine to come back
    # where each case run's /input and /output live: outside the store, random names, so a container that
    # reads its mount table learns no store path, evaluation id, worker or case key (ARENA_RUN_DIR)
    run_root: Path = field(default_factory=lambda: default_run_root())
    secure_cookies: bool = False  # session/remember cookies only over HTTPS (ARENA_SECURE_COOKIES)
    import_roots: tuple[Path, ...] = ()  # folders organizers may load cases from; () = ARENA_HOME/import
    shared_data: Path | None = None  # the real-data root (ARENA_SHARED_DATA); None = ../shared/data beside the repo
    reference_models: Path | None = None  # the reference models' folder (ARENA_REFERENCE_MODELS)
    debian_mirror: str = ""  # the base image's Debian mirror (ARENA_DEBIAN_MIRROR); "" = the host's
    gpu_devices: tuple[str, ...] = ()  # GPUs this worker owns (ARENA_GPU_DEVICES); () = every GPU NVML sees
    site_token: str | None = field(default=None, repr=False)  # a site worker's token (ARENA_SITE_TOKEN)
    site_data: Path | None = None  # a site worker's case folder (ARENA_SITE_DATA); None = ARENA_HOME/site-data
    # None: the web keeps one in ARENA_HOME/.secret_key, shared by its processes and restarts
    secret_key: str | None = field(default=None, repr=False)

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    @property
    def cases_dir(self) -> Path:
        return self.home / "cases"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def results_dir(self) -> Path:
        return self.home / "results"

    @property
    def site_data_dir(self) -> Path:
        """A site worker's case folder: ``<task>/<phase>/`` below it (ARENA_SITE_DATA)."""
        return self.site_data or self.home / "site-data"

    @property
    def site_spool_dir(self) -> Path:
        """Where a site worker keeps case outcomes the server has not acknowledged yet."""
        return self.home / "site-spool"

    def instance_id(self) -> str:
        """This Arena instance's id (8 hex digits, kept in ARENA_HOME/.instance_id, created on first use):
        its images on a shared Docker engine are tagged ``arena/<id>/submission:<n>``, so two instances on
        one engine never overwrite or evict each other's tags. Every process of the instance (web, workers
        on hosts sharing ARENA_HOME) reads the same file."""
        path = self.home / ".instance_id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            self.home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:  # another process made it just now
                return path.read_text().strip()
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(4))
            return path.read_text().strip()

    def ensure_dirs(self) -> None:
        for d in (self.home, self.uploads_dir, self.cases_dir, self.work_dir, self.results_dir):
            d.mkdir(parents=True, exist_ok=True)


def default_run_root() -> Path:
    """``<tmp>/arena-runs``: the default parent of the per-run folders mounted into containers."""
    return Path(tempfile.gettempdir()) / "arena-runs"


def _choice(env: dict[str, str], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = (env.get(key) or default).strip().lower()
    if value not in allowed:
        raise ValueError(f"{key}: expected one of {allowed}, got {value!r}")
    return value


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("ARENA_HOME") or Path.home() / ".arena").expanduser().resolve()
    db = env.get("ARENA_DATABASE_URL") or f"sqlite:///{home / 'arena.db'}"
    kwargs = {}
    if env.get("ARENA_SECRET_KEY"):
        kwargs["secret_key"] = env["ARENA_SECRET_KEY"]
    path = lambda key: Path(env[key]).expanduser() if env.get(key) else None  # noqa: E731
    return Settings(
        home=home,
        database_url=db,
        redis_url=env.get("ARENA_REDIS_URL") or "redis://127.0.0.1:6379/0",
        queue_name=env.get("ARENA_QUEUE") or "arena",
        max_upload_bytes=int(env.get("ARENA_MAX_UPLOAD_BYTES") or 8 * 1024**3),
        remember_days=float(env.get("ARENA_REMEMBER_DAYS") or 14),
        signin_rate=int(env.get("ARENA_SIGNIN_RATE") or 10),
        signin_address_rate=int(env.get("ARENA_SIGNIN_ADDRESS_RATE") or 50),
        signin_account_rate=int(env.get("ARENA_SIGNIN_ACCOUNT_RATE") or 100),
        signup_rate=int(env.get("ARENA_SIGNUP_RATE") or 10),
        upload_rate=int(env.get("ARENA_UPLOAD_RATE") or 6),
        proxy_hops=int(env.get("ARENA_PROXY_HOPS") or 0),
        upload_reservation_s=float(env.get("ARENA_UPLOAD_RESERVATION_S") or 600),
        image_cache_bytes=int(float(env.get("ARENA_IMAGE_CACHE_GB") or 50) * 1024**3),
        viewer_cache_bytes=int(float(env.get("ARENA_VIEWER_CACHE_GB") or 4) * 1024**3),
        root_images=_choice(env, "ARENA_ROOT_IMAGES", ("nobody", "reject"), "nobody"),
        team_concurrency=int(env.get("ARENA_TEAM_CONCURRENCY") or 1),
        heartbeat_s=float(env.get("ARENA_HEARTBEAT_S") or 10),
        stale_after_s=float(env.get("ARENA_STALE_AFTER_S") or 120),
        engine_wait_s=float(env.get("ARENA_ENGINE_WAIT_S") or 120),
        run_root=Path(env["ARENA_RUN_DIR"]).expanduser().resolve() if env.get("ARENA_RUN_DIR") else default_run_root(),
        secure_cookies=(env.get("ARENA_SECURE_COOKIES") or "").strip().lower() in ("1", "true", "yes"),
        import_roots=tuple(Path(p).expanduser() for p in (env.get("ARENA_IMPORT_ROOTS") or "").split(":") if p),
        shared_data=path("ARENA_SHARED_DATA"),
        reference_models=path("ARENA_REFERENCE_MODELS"),
        debian_mirror=(env.get("ARENA_DEBIAN_MIRROR") or "").strip(),
        site_token=(env.get("ARENA_SITE_TOKEN") or "").strip() or None,
        site_data=path("ARENA_SITE_DATA"),
        gpu_devices=tuple(d.strip() for d in (env.get("ARENA_GPU_DEVICES") or "").split(",") if d.strip()),
        **kwargs,
    )
