# GestaltLens web app / worker image (CPU only).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GESTALTLENS_DATA_DIR=/data

# OpenCV's headless wheel needs libgl-free runtime libraries only; libglib is enough.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# CPU build of torch first, from PyTorch's CPU index, so the project's range is already satisfied
# and no CUDA build is pulled.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY models ./models
COPY alembic.ini ./
RUN pip install -e . && useradd --system --uid 10001 --home /data gestaltlens \
 && mkdir -p /data && chown gestaltlens /data

USER gestaltlens
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["sh", "-c", "gestaltlens db upgrade && gestaltlens serve --host 0.0.0.0 --port 8000 --no-upgrade"]
