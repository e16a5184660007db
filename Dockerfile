# One image for every role; docker-compose.yml picks the command for each service.
FROM node:24-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json prisma.config.ts tsconfig.json schema.graphql ./
COPY prisma ./prisma
# postinstall generates the Prisma client (no engine download: see docs/decisions/0001). The prune
# then drops every development dependency: the pinned Node (the image's is the one), embedded
# PostgreSQL's binaries, the test and bench tools.
RUN npm ci --no-fund --no-audit && npm prune --omit=dev --no-fund --no-audit
COPY src ./src
ENV NODE_ENV=production
USER node
# The API's heap settings, as `npm run start:api` (measured in bench/README.md: RSS under 300 MB).
CMD ["node", "--max-old-space-size=192", "--max-semi-space-size=8", "src/main-api.ts"]
