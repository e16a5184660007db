# One image for every process; docker-compose.yml picks the command for each service.
# Install stage: production dependencies and the generated Prisma client.
FROM node:24-bookworm-slim AS install
WORKDIR /app
COPY package.json package-lock.json prisma.config.ts ./
COPY prisma ./prisma
# postinstall generates the Prisma client into src/generated (no engine download: see docs/decisions/0001).
# The prune then drops every development dependency: the pinned Node (the image's is the one),
# embedded PostgreSQL's binaries, the Prisma CLI, the test and bench tools.
RUN npm ci --no-fund --no-audit && npm prune --omit=dev --no-fund --no-audit

# The image: product code (src/) and what it reads at run time (package.json, schema.graphql, the
# migrations), nothing from tools/, test/ or bench/ (test/image.test.ts checks that every module here
# loads with production dependencies only).
FROM node:24-bookworm-slim
WORKDIR /app
COPY package.json schema.graphql ./
COPY prisma ./prisma
COPY --from=install /app/node_modules ./node_modules
COPY src ./src
COPY --from=install /app/src/generated ./src/generated
ENV NODE_ENV=production
USER node
# The API's heap settings, as `npm run start:api` (measured in bench/README.md: RSS under 300 MB).
CMD ["node", "--max-old-space-size=192", "--max-semi-space-size=8", "src/main-api.ts"]
