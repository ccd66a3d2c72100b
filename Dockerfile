# Production image: the compiled gateway and its runtime dependencies only.
#   docker build -t mailgate .
#   docker run -v /etc/mailgate:/etc/mailgate:ro -p 993:993 -p 143:143 mailgate
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production MAILGATE_CONFIG=/etc/mailgate/mailgate.yaml
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
USER node
EXPOSE 993 143
ENTRYPOINT ["bin/mailgate"]
CMD ["serve"]
