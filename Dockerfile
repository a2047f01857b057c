# Build: compile src/ to dist/ and pack it as the package consumers install.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY docker/image-package.mjs ./docker/
RUN npm run build \
 && mkdir /out \
 && npm pack --ignore-scripts --pack-destination /out \
 && node docker/image-package.mjs package.json "$(cd /out && ls *.tgz)" /out/package.json

# Run: the packed service with its peer dependencies (effect, @effect/*) at this repository's versions.
# The embedded engine (chdb) is optional and not needed next to a ClickHouse server.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /out ./
RUN npm install --omit=optional --ignore-scripts --no-audit --no-fund
USER node
EXPOSE 3000
CMD ["node", "node_modules/analytics-api/dist/main.js"]
