/* A virtual-table extension for the -extensions-path tests: the module "digits" is a read-only
 * table of one column, value, holding 0 to 9. It is eponymous (SELECT * FROM digits) and can be
 * created (CREATE VIRTUAL TABLE d USING digits), which a replicated write then does on every
 * node. Built by tests/extensions.rs with gcc. */
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1
#include <string.h>

typedef struct {
    sqlite3_vtab_cursor base;
    int row;
} cursor;

static int x_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) {
    (void)aux; (void)argc; (void)argv; (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(value INTEGER)");
    if (rc != SQLITE_OK) return rc;
    sqlite3_vtab *t = sqlite3_malloc(sizeof(*t));
    if (t == 0) return SQLITE_NOMEM;
    memset(t, 0, sizeof(*t));
    *out = t;
    return SQLITE_OK;
}

static int x_disconnect(sqlite3_vtab *t) {
    sqlite3_free(t);
    return SQLITE_OK;
}

static int x_best_index(sqlite3_vtab *t, sqlite3_index_info *info) {
    (void)t;
    info->estimatedCost = 10;
    info->estimatedRows = 10;
    return SQLITE_OK;
}

static int x_open(sqlite3_vtab *t, sqlite3_vtab_cursor **out) {
    (void)t;
    cursor *c = sqlite3_malloc(sizeof(*c));
    if (c == 0) return SQLITE_NOMEM;
    memset(c, 0, sizeof(*c));
    *out = &c->base;
    return SQLITE_OK;
}

static int x_close(sqlite3_vtab_cursor *c) {
    sqlite3_free(c);
    return SQLITE_OK;
}

static int x_filter(sqlite3_vtab_cursor *c, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx; (void)idx_str; (void)argc; (void)argv;
    ((cursor *)c)->row = 0;
    return SQLITE_OK;
}

static int x_next(sqlite3_vtab_cursor *c) {
    ((cursor *)c)->row++;
    return SQLITE_OK;
}

static int x_eof(sqlite3_vtab_cursor *c) {
    return ((cursor *)c)->row >= 10;
}

static int x_column(sqlite3_vtab_cursor *c, sqlite3_context *ctx, int col) {
    (void)col;
    sqlite3_result_int(ctx, ((cursor *)c)->row);
    return SQLITE_OK;
}

static int x_rowid(sqlite3_vtab_cursor *c, sqlite3_int64 *rowid) {
    *rowid = ((cursor *)c)->row + 1;
    return SQLITE_OK;
}

static sqlite3_module digits_module = {
    0, x_connect, x_connect, x_best_index, x_disconnect, x_disconnect, x_open, x_close,
    x_filter, x_next, x_eof, x_column, x_rowid,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
};

int sqlite3_digits_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
    (void)err;
    SQLITE_EXTENSION_INIT2(api);
    return sqlite3_create_module(db, "digits", &digits_module, 0);
}
