# One image for every sagaway component; the command picks which one runs
# (see docker-compose.yml): `sagaway up | api | relay | orchestrator | worker … | migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# Non-editable install: the image runs from site-packages, not from the source tree,
# so what is tested is what a `pip install sagaway` user gets. Build leftovers go in the
# same layer.
RUN pip install . \
    && rm -rf build ./*.egg-info

# An unprivileged user with no home and no shell; nothing in the image is writable by it.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sagaway
USER sagaway
WORKDIR /app

EXPOSE 8000
ENTRYPOINT ["sagaway"]
CMD ["up", "--api-host", "0.0.0.0"]
