# idcard-ocr: one image for the API, the workers and the migrations.
#
#   docker build -t idcard-ocr .
#   docker run --rm idcard-ocr recognize --help
#
# The entry point is the `idcard-ocr` command; the default command serves the API. See
# docker-compose.yml for the whole service (PostgreSQL, Redis, API, workers).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# rapidocr-onnxruntime depends on opencv-python (beside our opencv-python-headless), and
# whichever of the two provides `cv2` loads libGL and GLib when imported. No fonts: only
# the synthetic-card generator of the tests and benchmarks draws text.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# The dependencies first, read from pyproject.toml alone, so that this (large) layer is
# rebuilt only when they change, not on every change of the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['service']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the code: pip install '.[service]' in editable form. `idcard-ocr migrate` finds
# alembic.ini and migrations/ beside the idcard package (idcard/migrate.py), which a
# plain wheel would not carry, so the package runs from this checkout in /app.
COPY . .
RUN pip install --no-deps -e '.[service]'

# Not root. The models ship inside the rapidocr wheel and are only read; Celery beat
# keeps its schedule in /tmp.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin idcard
USER idcard

EXPOSE 8000
ENTRYPOINT ["idcard-ocr"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
