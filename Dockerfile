# One image for every vbm service; compose.yaml picks the service with the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY lab ./lab
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/vbm vbm \
    && mkdir -p /var/lib/vbm && chown vbm /var/lib/vbm
USER vbm
ENV VBM_DATA_DIR=/var/lib/vbm
CMD ["python", "-m", "services.gateway"]
