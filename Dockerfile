# One image for every vbm service; compose.yaml picks the service with the command.
# Python packages come from the lock only (hashes checked), the project itself without the index.
FROM python:3.11-slim
WORKDIR /app
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY lab ./lab
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --home /var/lib/vbm vbm \
    && mkdir -p /var/lib/vbm && chown vbm /var/lib/vbm && chmod 0700 /var/lib/vbm
USER vbm
ENV VBM_DATA_DIR=/var/lib/vbm
CMD ["python", "-m", "services.gateway"]
