FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# The embedded engine (chdb) is optional and not needed next to a ClickHouse server.
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
USER node
EXPOSE 3000
CMD ["node", "--import", "tsx", "src/main.ts"]
