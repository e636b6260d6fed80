# Nexus build. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO      ?= go
BIN     := bin/nexus
TOOLS   := .tools/node_modules/.bin
BUF     := $(TOOLS)/buf
# make run's data directory and address: make run LISTEN=127.0.0.1:9090 DATA=/tmp/nexus, or
# NEXUS_LISTEN and NEXUS_DATA_DIR in the environment (the server's own variables).
DATA    ?= $(or $(NEXUS_DATA_DIR),.nexus-data)
LISTEN  ?= $(or $(NEXUS_LISTEN),127.0.0.1:8080)
FUZZTIME ?= 5s
GOTESTFLAGS ?= -race -count=1

.PHONY: help
help: ## Show this help.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(TOOLS)/buf: .tools/package.json .tools/package-lock.json
	cd .tools && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

GRPCURL_VERSION := v1.9.4

.tools/bin/grpcurl:
	GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

# golangci-lint (depguard holds the architecture's dependency rules, see .golangci.yml) is
# pinned by .tools/golangci/go.mod and go.sum, a module of its own so that the root go.mod
# does not take in golangci-lint's dependencies. Built from the Go module proxy: a cold
# build took about 8.5 minutes on 2 cores; later builds come from the Go build cache.
GOLANGCI := .tools/bin/golangci-lint

$(GOLANGCI): .tools/golangci/go.mod .tools/golangci/go.sum
	GOWORK=off $(GO) -C .tools/golangci build -o $(CURDIR)/$(GOLANGCI) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: tools
tools: $(TOOLS)/buf ## Install the pinned code generation tools (npm) into .tools.

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI) ## Build the pinned golangci-lint into .tools/bin (make lint does this itself).

.PHONY: grpcurl
grpcurl: .tools/bin/grpcurl ## Install grpcurl into .tools/bin (used by the README examples).

.PHONY: build
build: ## Build the nexus binary into bin/.
	@echo "==> building $(BIN) (the first build downloads modules and takes a few minutes)"
	$(GO) build -o $(BIN) ./server/cmd/nexus

DEMO_REPO := bin/demo-repo

.PHONY: run
run: build demo-repo ## Build the server and a demo repository of the example plugins, then serve on LISTEN (127.0.0.1:8080) with data in DATA (.nexus-data): make run LISTEN=127.0.0.1:9090 DATA=/tmp/nexus.
	@echo "==> serving on $(LISTEN), data in $(DATA) (the admin token is in $(DATA)/admin-token)"
	$(BIN) serve --listen $(LISTEN) --data-dir $(DATA) \
		--repository "demo=file://$(CURDIR)/$(DEMO_REPO);key=$$(cat bin/demo-repo.pub);description=Example plugins built from this checkout"

CLUSTER_DIR ?= .nexus-cluster
CLUSTER_PORT ?= 8081

.PHONY: run-cluster
run-cluster: build demo-repo redis-server postgresql ## Run PostgreSQL, Redis and three replicas on 127.0.0.1:8081-8083 (lease TTL 5s; state in .nexus-cluster, emptied at each start) until Ctrl-C; see the README's "Try a cluster".
	$(GO) build -o bin/nexus-cluster ./server/cmd/nexus-cluster
	bin/nexus-cluster -nexus $(BIN) -dir $(CLUSTER_DIR) -first-port $(CLUSTER_PORT) \
		-repository "demo=file://$(CURDIR)/$(DEMO_REPO);key=$$(cat bin/demo-repo.pub);description=Example plugins built from this checkout"

.PHONY: demo-repo
demo-repo: examples ## Build a signed local repository of the example plugins (two versions of analytics-plugin).
	@echo "==> building the demo repository $(DEMO_REPO) (signed with bin/demo-repo.key)"
	@rm -rf $(DEMO_REPO) && mkdir -p $(DEMO_REPO)
	@[ -s bin/demo-repo.key ] || $(BIN) repo keygen -o bin/demo-repo.key > bin/demo-repo.pub 2>/dev/null
	@for e in $(EXAMPLES); do v=$$(sed -n 's/^  "version": "\(.*\)",$$/\1/p' clients/go/plugin/examples/$$e/plugin.json); \
		cp bin/packages/$$e.tar.gz $(DEMO_REPO)/$$e-$$v.tar.gz; done
	@rm -rf bin/stage/analytics-plugin-next && mkdir -p bin/stage/analytics-plugin-next/bin && \
		sed 's/^  "version": "1.2.0",$$/  "version": "1.3.0",/' clients/go/plugin/examples/analytics-plugin/plugin.json > bin/stage/analytics-plugin-next/plugin.json && \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=1.3.0" -o bin/stage/analytics-plugin-next/bin/analytics-plugin ./clients/go/plugin/examples/analytics-plugin && \
		$(BIN) package bin/stage/analytics-plugin-next -o $(DEMO_REPO)/analytics-plugin-1.3.0.tar.gz >/dev/null
	@cp clients/go/plugin/examples/catalog.json $(DEMO_REPO)/
	$(BIN) repo index $(DEMO_REPO) --key bin/demo-repo.key --name demo --description "Example plugins built from this checkout"

EXAMPLES := $(patsubst clients/go/plugin/examples/%/plugin.json,%,$(wildcard clients/go/plugin/examples/*/plugin.json))

.PHONY: examples
examples: build ## Build the example plugins and their packages into bin/packages/.
	@echo "==> building the example plugins: $(EXAMPLES)"
	@mkdir -p bin/packages
	@for e in $(EXAMPLES); do \
		rm -rf bin/stage/$$e && mkdir -p bin/stage/$$e/bin && \
		cp clients/go/plugin/examples/$$e/plugin.json bin/stage/$$e/ && \
		CGO_ENABLED=0 $(GO) build -trimpath -o bin/stage/$$e/bin/$$e ./clients/go/plugin/examples/$$e && \
		$(BIN) package bin/stage/$$e -o bin/packages/$$e.tar.gz || exit 1; done

.PHONY: generate
generate: tools ## Regenerate third-party protos, gen/ (Go, TypeScript, OpenAPI) and the served OpenAPI document.
	rm -rf proto/third_party
	mkdir -p proto/third_party/google/api proto/third_party/google/rpc
	cp .tools/node_modules/google-proto-files/google/api/annotations.proto \
	   .tools/node_modules/google-proto-files/google/api/http.proto proto/third_party/google/api/
	cp .tools/node_modules/google-proto-files/google/rpc/error_details.proto proto/third_party/google/rpc/
	$(GO) run ./server/internal/tools/derivevalidate proto/third_party
	$(BUF) format -w proto/third_party
	$(BUF) generate
	@# google.rpc's error details (ErrorInfo carries the API error code, BadRequest the bad
	@# fields) for the browser console, which decodes them; TypeScript only, as Go has genproto.
	$(BUF) generate --path proto/third_party/google/rpc/error_details.proto --template \
		'{"version":"v2","plugins":[{"local":".tools/node_modules/.bin/protoc-gen-es","out":"gen/ts","opt":["target=ts","import_extension=js"]}]}'
	$(GO) run ./server/internal/tools/openapidoc gen/openapi/openapi.yaml server/openapi/openapi.json

.PHONY: checkgenerate
checkgenerate: generate ## Fail when generated files differ from the committed ones.
	@git add -N proto gen server/openapi >/dev/null 2>&1 || true
	@git diff --exit-code -- proto gen server/openapi || (echo "generated code is stale: run make generate and commit" >&2; exit 1)

.PHONY: lint
lint: tools $(GOLANGCI) ## buf lint, buf format, buf breaking (against main), go vet, golangci-lint (depguard dependency rules), gofmt.
	$(BUF) lint
	$(BUF) format -d --exit-code
	@if git rev-parse --verify -q main >/dev/null && git ls-tree -r --name-only main -- proto/nexus | grep -q '\.proto$$'; then \
		echo "$(BUF) breaking --against '.git#branch=main'"; \
		$(BUF) breaking --against '.git#branch=main'; \
	else echo "buf breaking: main has no protos yet, skipped"; fi
	$(GO) vet ./...
	$(GOLANGCI) run ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:" $$out; exit 1; fi

.PHONY: test
test: checkgenerate checkconsole lint test-go test-fuzz test-ts test-console test-readme ## Every test: generation, the console bundle, lint, Go (race), fuzz, TypeScript, the console in a browser, README examples.

.PHONY: test-go
test-go: redis-server postgresql ## Go tests with the race detector.
	$(GO) test $(GOTESTFLAGS) ./...

.PHONY: redis-server
redis-server: ## Make sure redis-server is installed (the messaging tests and nexus-bench start their own).
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing redis-server (apt)" >&2; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >&2; \
		else echo "redis-server is missing: install it (e.g. apt-get install redis-server)" >&2; exit 1; fi; }

.PHONY: postgresql
postgresql: ## Make sure PostgreSQL (initdb, postgres) is installed (the store tests and nexus-bench's two-replica scenario start their own).
	@{ command -v initdb && command -v postgres; } >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing postgresql (apt)" >&2; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2; \
		else echo "PostgreSQL is missing: install it (e.g. apt-get install postgresql)" >&2; exit 1; fi; }

FUZZ_TARGETS := ./pluginhost/manifest:FuzzParse \
	./pluginhost/archive:FuzzExtract \
	./pluginhost/archive:FuzzReadManifest \
	./pluginhost/configschema:FuzzParseAndValidate \
	./pluginhost/repository:FuzzParseIndex \
	./pluginhost/repository:FuzzParseConstraint \
	./pluginhost/bus/busredis:FuzzDecodeEnvelope \
	./pluginhost/rawstruct:FuzzValidate \
	./pluginhost/rawstruct:FuzzCut \
	./server:FuzzIDChecks \
	./server:FuzzPluginCodec \
	./clients/go/plugin:FuzzDecodeStructMap \
	./clients/go/plugin:FuzzEncodeStructMap \
	./clients/go/plugin:FuzzFrameCodec \
	./clients/go/plugin:FuzzIDChecks

.PHONY: test-fuzz
test-fuzz: ## Run each fuzz target briefly (FUZZTIME each).
	@.ci/fuzz "$(GO)" $(FUZZTIME) $(FUZZ_TARGETS)

.PHONY: test-ts
test-ts: build examples ## Build the TypeScript client and plugin SDK and run their tests against a live server (the example TypeScript plugin beside the Go examples).
	cd clients/ts && npm ci --no-audit --no-fund --loglevel=error && npm test

CONSOLE := clients/console

.PHONY: console
console: ## Build the web console (clients/console: TypeScript, Preact, Vite) into server/console/dist, which the server embeds and serves at /ui/.
	@echo "==> building the web console into server/console/dist"
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error && npm run build

.PHONY: checkconsole
checkconsole: console ## Fail when the committed console bundle differs from a fresh build of clients/console.
	@git add -N server/console/dist >/dev/null 2>&1 || true
	@git diff --exit-code --stat -- server/console/dist || (echo "the console bundle is stale: run make console and commit server/console/dist" >&2; exit 1)

.PHONY: test-console
test-console: build demo-repo chromium ## The console in a real browser: Debian's chromium driven by playwright-core against a live server with the demo catalog.
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error && npm test

.PHONY: console-screenshots
console-screenshots: build demo-repo chromium ## Take the README's console screenshots again (clients/console/screenshots).
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error && CONSOLE_SCREENSHOTS=screenshots npm test

.PHONY: chromium
chromium: ## Make sure Debian's chromium is installed (the console's browser tests drive it).
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium (apt)" >&2; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2; \
		else echo "chromium is missing: install it (e.g. apt-get install chromium)" >&2; exit 1; fi; }

.PHONY: test-readme
test-readme: build demo-repo grpcurl ## Run the README's examples against a fresh server.
	.ci/readme-test

BENCHFLAGS ?=

.PHONY: bench
bench: build redis-server postgresql ## The benchmark table (nexus-bench, README "Benchmarks"): messaging, fan-out, idle sessions and API reads against baselines of the same run, each ratio with its target (BENCHFLAGS="-json", "-rounds 1 -duration 5s", "-skip-redis", "-only messaging|fanout|idle|reads").
	$(GO) run ./server/cmd/nexus-bench -nexus $(BIN) $(BENCHFLAGS)

.PHONY: bench-go
bench-go: redis-server postgresql ## The Go benchmarks (BENCH=regexp, default all; for a profile, go test one package with -bench and -cpuprofile).
	$(GO) test -run '^$$' -bench '$(or $(BENCH),.)' -benchmem ./...

.PHONY: clean
clean: ## Remove build outputs.
	rm -rf bin
