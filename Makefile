# secret_mgmt — PGXS build, plus the project's own targets:
#   make            build the extension
#   make install    install it into the PostgreSQL found by PG_CONFIG
#   make test       install what the suite needs, then run every suite
#   make demo       a throwaway cluster and a narrated walk-through
#   make bench      side-by-side benchmark, printed as a table

EXTENSION   = secret_mgmt
MODULE_big  = secret_mgmt
OBJS        = src/secret_mgmt.o src/crypto.o src/keyring.o src/query.o \
              src/tenant.o src/store.o src/types.o src/lookup.o \
              src/acl.o src/token.o src/render.o \
              src/http.o src/backend.o src/backend_vault.o src/kms.o \
              src/events.o src/webhook.o src/amqp.o src/generator.o \
              src/rotation.o src/scram.o src/lifecycle.o src/worker.o \
              src/audit.o src/flusher.o src/metrics.o src/outbox.o \
              src/loghygiene.o src/health.o
# The install script is built from one part per subsystem (sql/install/).
DATA_built  = sql/secret_mgmt--0.1.0.sql
INSTALL_PARTS = $(sort $(wildcard $(srcdir)/sql/install/*.sql))
PGFILEDESC  = "secret_mgmt - encrypted, versioned, tenant-isolated secret store"

PG_CPPFLAGS = -I$(srcdir)/src/include
SHLIB_LINK  = -lcrypto -lcurl -lrabbitmq

# Warnings are errors; test builds also check assertions.
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-sign-compare
ifdef SM_ASSERTS
PG_CPPFLAGS += -DSM_ENABLE_ASSERTS
endif

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/secret_mgmt--0.1.0.sql: $(INSTALL_PARTS)
	cat $(INSTALL_PARTS) > $@

.PHONY: test demo bench deps

deps:
	sh test/deps.sh

test:
	sh test/run.sh

demo:
	sh demo/demo.sh

bench:
	sh bench/bench.sh
