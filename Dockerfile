# Build: compile src/ to dist/ (the types of the optional embedded engine are needed to compile).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Run: production dependencies only. The embedded engine (chdb) is optional and not needed next to a server.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund
COPY --from=build /app/dist ./dist
# For `npm run seed` inside the container (runs from source with tsx).
COPY tsconfig.json ./
COPY src ./src
COPY scripts/seed.ts ./scripts/seed.ts
USER node
EXPOSE 3000
CMD ["node", "dist/main.js"]
