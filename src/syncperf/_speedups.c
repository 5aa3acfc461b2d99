/* syncperf._speedups: the compiled hot path (optional; the pure-Python path is the fallback).
 *
 * Each piece does exactly what its Python twin does for the common case and hands every
 * other case back to it:
 *
 *   Operation    the fields of a SyncOperation that start, end and the fold read (a C struct:
 *                allocation sets them all at once; Python reads them as slots), and its
 *                record_items for an exact int count of the operation's own entity;
 *   current_operation  _operation.current_operation;
 *   start        _lifecycle.start (what begin calls: the ASGI middleware, sync_operation());
 *   decide_span  _tracing.sampling's decision of a standard sampler (ratio, parent-based,
 *                static) and, when it drops the span, the unsampled context made current;
 *   end_plain    _lifecycle.end (an end_ns too) for an operation without a span (or
 *                unsampled, with no error, conflict or slowness to rescue), entity change,
 *                other entities' items or client details (False, untouched, otherwise);
 *   fold         _fold.fold's loop: each ended operation's duration and overhead queued per
 *                series, its items, conflicts and batch size recorded while their series are
 *                bound, the rest of its record handed to a Python function;
 *   Phase        an instrument_sync extractor phase: each extractor called on its argument
 *                or the result, the common entity, batch-size and conflict values applied;
 *   FastPath     the instrument_sync wrapper of a `def` handler: start (its span, or the
 *                sampler's decision, by _lifecycle.span_start), extractor phases, call, end
 *                in C; anything else (a joined operation, a span to end, a start log, a
 *                response object, an exception) through the Python helpers;
 *   read_headers, read_scope, mark_replayed, sending  asgi._read's readers of the request
 *                headers, the scope's method, scheme and root path, the response's replay
 *                header, and what Exchange.send records of a response message;
 *   finish       asgi._finish.finish for a request that ended as most do: its operation
 *                ended (end_impl) and its HTTP metrics queued, or the Python helpers called.
 *
 * Everything runs with the GIL held and calls no code that could release it between the
 * reads and writes that must go together, as the Python twins do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* ---- module state (one interpreter: usable()) ------------------------------------------- */

static PyObject *CURRENT;        /* the ContextVar of the current operation */
static PyObject *PERF_NS;        /* time.perf_counter_ns */
static PyObject *CLOCKS;         /* the namespace whose `_perf` is the clock (tests swap it) */
static PyObject *FOLD_HOOK;      /* fold_hook(rt, wait): fold under the lock (Python) */
static PyObject *NOOP;           /* the no-op operation current_operation() returns */
static PyObject *ITEMS_SLOW;     /* SyncOperation.record_items in Python: every other case */
static PyObject *S_CHANGES[3];   /* "created", "updated", "deleted" */
static PyObject *S_ERROR, *S_CONFLICT, *S_SUCCESS;
static Py_ssize_t FOLD_AT = 64, MAX_QUEUED = 1024, PAIRS_AT = 256;
static int use_clock = 0;
static PyInterpreterState *OWNER; /* the interpreter whose import set this state up */

static PyObject *s_perf, *s_entity, *s_ended, *s_append, *s_successor, *s_inflight, *s_pop, *s_log,
    *s_on, *s_slow_ns, *s_next_check, *s_end, *s_popleft, *s_success, *s_error, *s_conflicted,
    *s_overhead, *s_installed, *s_tracing, *s_active, *s_starts, *s_token, *s_counts, *s_sum,
    *s_min, *s_max, *s_value, *s_touched, *s_items, *s_batch, *s_fed, *s_change, *s_op_series,
    *s_operation, *s_detach, *s_span_start, *s_db_instrumented, *s_end_span, *s_span_end_failed,
    *s_internal_error_name, *ANY;
#define MAX_COUNT (1LL << 53) /* _gate.MAX_COUNT */

/* PyLong_AsLongLong takes a slow path for values past 2**30; PyLong_AsLong does not. */
#if LONG_MAX >= 9223372036854775807L
#define AS_LL(o) ((long long)PyLong_AsLong(o))
#else
#define AS_LL(o) PyLong_AsLongLong(o)
#endif

/* dict[key] (borrowed), NULL when absent (or with an error). Up to 3.11 a call site remembers
 * what it found while the dict's version tag stays (unique to one state of one dict; the dict
 * holds what it found); 3.12 deprecates the tag: there each call looks it up. */
typedef struct {
    PyObject *dict, *key, *value;
    uint64_t version;
} Found;

static PyObject *
item_of(PyObject *dict, PyObject *key, Found *found)
{
#if PY_VERSION_HEX < 0x030C0000
    uint64_t version = ((PyDictObject *)dict)->ma_version_tag;
    if (found->value != NULL && found->dict == dict && found->key == key &&
        found->version == version)
        return found->value;
    found->dict = dict;
    found->key = key;
    found->version = version;
    return found->value = PyDict_GetItemWithError(dict, key);
#else
    return PyDict_GetItemWithError(dict, key);
#endif
}

/* An exact int as a long long (-1 with an error when it does not fit); a call site remembers
 * the last one it read (holding it: the same object is the same value). */
typedef struct {
    PyObject *held;
    long long value;
} Read;

static long long
read_of(PyObject *o, Read *read)
{
    if (o == read->held)
        return read->value;
    long long v = AS_LL(o);
    if (PyLong_CheckExact(o) && !(v == -1 && PyErr_Occurred())) {
        Py_XSETREF(read->held, Py_NewRef(o)); /* (an int: its release runs no code) */
        read->value = v;
    }
    return v;
}

static int
now_ns(long long *out)
{
    static Found found; /* (tests swap the clock: the namespace's `_perf`) */
    PyObject *clock = CLOCKS == NULL ? NULL : item_of(CLOCKS, s_perf, &found);
    if (clock == NULL) {
        if (PyErr_Occurred())
            return -1;
        clock = PERF_NS;
    }
#if defined(__linux__)
    if (use_clock && clock == PERF_NS) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        *out = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        return 0;
    }
#endif
    PyObject *r = PyObject_CallNoArgs(clock);
    if (r == NULL)
        return -1;
    *out = AS_LL(r);
    Py_DECREF(r);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* ---- attributes of __slots__ classes ---------------------------------------------------- */

/* Where a __slots__ field lives in instances of one class: looked up once per version of the
 * class (a call site keeps one; a class whose field is no plain slot gets NULL: the caller
 * takes the generic path). Compared, never dereferenced: (class, version tag) names one
 * class for good. */
typedef struct {
    PyTypeObject *type;
    unsigned int version;
    Py_ssize_t offset;
} Slot;

/* The lookup behind slot_of, once per class version. */
static void
slot_find(PyTypeObject *type, PyObject *name, Slot *slot)
{
    PyObject *d = _PyType_Lookup(type, name); /* borrowed; no Python code runs */
    slot->offset = -1;
    if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            slot->offset = m->offset;
    }
    slot->type = (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? type : NULL;
    slot->version = type->tp_version_tag;
}

static inline PyObject **
slot_of(PyObject *obj, PyObject *name, Slot *slot)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (slot->type != type || slot->version != type->tp_version_tag ||
        !(type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        slot_find(type, name, slot);
    return slot->offset < 0 ? NULL : (PyObject **)((char *)obj + slot->offset);
}

/* getattr(obj, name), straight from its slot when it has one (a new reference). */
static inline PyObject *
slot_get(PyObject *obj, PyObject *name, Slot *slot)
{
    PyObject **field = slot_of(obj, name, slot);
    if (field != NULL && *field != NULL)
        return Py_NewRef(*field);
    return PyObject_GetAttr(obj, name);
}

/* One cache per field name, and class where two read it. */
enum { SL_entity, SL_on, SL_slow_ns, SL_next_check, SL_success, SL_overhead, SL_items, SL_batch,
       SL_starts, SL_counts, SL_value, SL_touched, SL_active,
       SL_tracing_next_check, SL_op_series, SL_operation, SL_found_entity, SL_successor, SL_N };
static Slot SLOTS[SL_N];
#define GET_AT(obj, name, at) slot_get((obj), s_##name, &SLOTS[at])
#define GET(obj, name) GET_AT(obj, name, SL_##name)

/* ---- Operation: the fields ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *rt, *series, *entity, *start_ns, *own_ns, *resumed_ns, *conflicts, *item_total,
        *db_queries, *db_ns, *ctx_token, *span, *parent_ctx, *error_type, *observed,
        *conflict_detail, *batch, *items, *entity_items, *idempotent, *ended, *token, *unsampled;
} Op;

#define OP_FIELDS(X)                                                                         \
    X(rt) X(series) X(entity) X(start_ns) X(own_ns) X(resumed_ns) X(conflicts) X(item_total)  \
    X(db_queries) X(db_ns) X(ctx_token) X(span) X(parent_ctx) X(error_type) X(observed)      \
    X(conflict_detail) X(batch) X(items) X(entity_items) X(idempotent) X(ended) X(token)      \
    X(unsampled)

static PyObject *ZERO;
/* _tracing: what decide_span builds with, and the current context (bind_spans) */
static PyObject *SPAN_CONTEXT, *NON_RECORDING, *DEFAULT_STATE, *FLAGS;
static PyObject *CONTEXT_VAR, *CONTEXT_TYPE, *CONTEXT_NS, *RUNTIME, *SPAN_KEY, *ATTACH_SLOW,
    *DETACH_SLOW;
static PyObject *s_runtime_context, *s_span_attrs, *s_parent_ctx_attr, *s_unsampled_attr, *LIMIT;

/* Set every field (the caller holds new references to nothing: all borrowed). */
static int
op_init_fields(Op *op, PyObject *rt, PyObject *series, PyObject *start_ns)
{
    PyObject *entity = Py_None;
    if (series != Py_None) {
        entity = GET(series, entity);
        if (entity == NULL)
            return -1;
    } else {
        Py_INCREF(entity);
    }
#define NONE(f) op->f = Py_NewRef(Py_None);
    OP_FIELDS(NONE)
#undef NONE
    Py_SETREF(op->rt, Py_NewRef(rt));
    Py_SETREF(op->series, Py_NewRef(series));
    Py_SETREF(op->entity, entity);
    Py_SETREF(op->start_ns, Py_NewRef(start_ns));
    Py_SETREF(op->own_ns, Py_NewRef(ZERO));
    Py_SETREF(op->resumed_ns, Py_NewRef(ZERO));
    Py_SETREF(op->conflicts, Py_NewRef(ZERO));
    Py_SETREF(op->item_total, Py_NewRef(ZERO));
    Py_SETREF(op->db_queries, Py_NewRef(ZERO));
    Py_SETREF(op->db_ns, Py_NewRef(ZERO));
    Py_SETREF(op->idempotent, Py_NewRef(Py_False));
    Py_SETREF(op->ended, Py_NewRef(Py_False));
    return 0;
}

static PyObject *
op_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *rt = Py_None, *series = Py_None, *start_ns = ZERO;
    static char *names[] = {"rt", "series", "start_ns", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO:SyncOperation", names, &rt, &series,
                                     &start_ns))
        return NULL;
    Op *op = (Op *)type->tp_alloc(type, 0);
    if (op == NULL)
        return NULL;
    if (op_init_fields(op, rt, series, start_ns) < 0) {
        Py_DECREF(op);
        return NULL;
    }
    return (PyObject *)op;
}

static int
op_traverse(Op *op, visitproc visit, void *arg)
{
#define VISIT(f) Py_VISIT(op->f);
    OP_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int
op_clear(Op *op)
{
#define CLEAR(f) Py_CLEAR(op->f);
    OP_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void
op_dealloc(Op *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    op_clear(op);
    tp->tp_free((PyObject *)op);
}

/* ---- the recorder calls a handler makes most --------------------------------------------- */

static int read_ll(PyObject *o, long long *out);

/* ITEMS_SLOW(op, *args, **kwargs): the call as it was made, to the Python twin. */
static PyObject *
items_slow(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (ITEMS_SLOW == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "syncperf._speedups.operations() was not called");
        return NULL;
    }
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    PyObject *small[8], **all = total < 8 ? small : PyMem_New(PyObject *, total + 1);
    if (all == NULL)
        return PyErr_NoMemory();
    all[0] = op;
    for (Py_ssize_t i = 0; i < total; i++)
        all[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(ITEMS_SLOW, all, nargs + 1, kwnames);
    if (all != small)
        PyMem_Free(all);
    return r;
}

/* SyncOperation.record_items for its common case: an exact int count of the operation's own
 * entity, with no change type or one of the three by name, in an operation not ended;
 * ITEMS_SLOW takes every other (and so every rejection, strict mode included). */
static PyObject *
op_record_items(Op *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *change = Py_None, *key = Py_None;
    long long n, total;
    if (op->ended != Py_False || nargs != 1 || !PyLong_CheckExact(args[0]))
        goto slow; /* (an ended operation's: rejected there, operation_ended) */
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        if (name == s_change)
            change = value;
        else if (name != s_entity || value != Py_None)
            goto slow;
    }
    if (change != Py_None) {
        if (!PyUnicode_CheckExact(change))
            goto slow;
        key = NULL;
        for (int i = 0; i < 3 && key == NULL; i++)
            if (change == S_CHANGES[i] || PyUnicode_Compare(change, S_CHANGES[i]) == 0)
                key = S_CHANGES[i];
        if (key == NULL)
            goto slow;
    }
    if (!read_ll(args[0], &n) || n < 0 || n >= MAX_COUNT || op->item_total == NULL ||
        !PyLong_CheckExact(op->item_total) || !read_ll(op->item_total, &total) ||
        total + n >= MAX_COUNT || op->items == NULL ||
        (op->items != Py_None && !PyDict_CheckExact(op->items)))
        goto slow;
    PyObject *sum = PyLong_FromLongLong(total + n);
    if (sum == NULL)
        return NULL;
    if (op->items == Py_None) {
        PyObject *items = PyDict_New();
        if (items == NULL || PyDict_SetItem(items, key, args[0]) < 0) {
            Py_XDECREF(items);
            Py_DECREF(sum);
            return NULL;
        }
        Py_SETREF(op->items, items);
    } else {
        PyObject *had = PyDict_GetItemWithError(op->items, key), *now;
        if (had == NULL && PyErr_Occurred()) {
            Py_DECREF(sum);
            return NULL;
        }
        now = had == NULL ? Py_NewRef(args[0]) : PyNumber_Add(had, args[0]);
        if (now == NULL || PyDict_SetItem(op->items, key, now) < 0) {
            Py_XDECREF(now);
            Py_DECREF(sum);
            return NULL;
        }
        Py_DECREF(now);
    }
    Py_SETREF(op->item_total, sum);
    Py_RETURN_NONE;
slow:
    return items_slow((PyObject *)op, args, nargs, kwnames);
}

static PyMethodDef op_methods[] = {
    {"record_items", (PyCFunction)(void (*)(void))op_record_items,
     METH_FASTCALL | METH_KEYWORDS,
     "record_items($self, n, *, entity=None, change=None)\n--\n\n"
     "Count ``n`` items synced, optionally per entity and change type.\n\n"
     "Args:\n"
     "    n: Item count (an int >= 0).\n"
     "    entity: The items' entity; defaults to the operation's entity.\n"
     "    change: ``\"created\"``, ``\"updated\"`` or ``\"deleted\"``, or None when unknown.\n"},
    {NULL, NULL, 0, NULL},
};

#define MEMBER(f) {"_" #f, T_OBJECT_EX, offsetof(Op, f), 0, NULL},
static PyMemberDef op_members[] = {OP_FIELDS(MEMBER){NULL}};
#undef MEMBER

static PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "syncperf._speedups.Operation",
    .tp_basicsize = sizeof(Op),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of a sync operation that start, end and the fold read.",
    .tp_new = op_new,
    .tp_traverse = (traverseproc)op_traverse,
    .tp_clear = (inquiry)op_clear,
    .tp_dealloc = (destructor)op_dealloc,
    .tp_members = op_members,
    .tp_methods = op_methods,
};

/* ---- Values: integers queued for a series, as C integers -------------------------------- */

/* The fold's queue of one series' values (nanoseconds or counts) for `record`, and, linked
 * (PAIRS), a FastPath's (duration, overhead) pairs of plain operations it ended, each pair
 * announced in `ended` by the marker (bound, pairs). Values past a long long: `spill`. */
typedef struct Values {
    PyObject_HEAD
    long long *v;
    Py_ssize_t n, cap;
    PyObject *spill; /* a list, or NULL */
    struct Values *prev, *next;
    int linked;
} Values;

static Values PAIRS = {.prev = &PAIRS, .next = &PAIRS}; /* the linked ones (a ring) */
static PyTypeObject ValuesType;

/* Room for `more` values: 0, or -1 with MemoryError (nothing changed). */
static int
values_reserve(Values *self, Py_ssize_t more)
{
    if (self->n + more <= self->cap)
        return 0;
    Py_ssize_t cap = self->cap ? self->cap : 16;
    while (cap < self->n + more)
        cap *= 2;
    long long *v = PyMem_Realloc(self->v, (size_t)cap * sizeof(long long));
    if (v == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->v = v;
    self->cap = cap;
    return 0;
}

static int
values_push(Values *self, long long x)
{
    if (values_reserve(self, 1) < 0)
        return -1;
    self->v[self->n++] = x;
    return 0;
}

/* An int that fits a long long as one; anything else kept as it is (`spill`). */
static int
values_push_obj(Values *self, PyObject *o)
{
    int overflow = 1;
    long long x = PyLong_CheckExact(o) ? PyLong_AsLongLongAndOverflow(o, &overflow) : 0;
    if (!overflow && !(x == -1 && PyErr_Occurred()))
        return values_push(self, x);
    PyErr_Clear();
    if (self->spill == NULL && (self->spill = PyList_New(0)) == NULL)
        return -1;
    return PyList_Append(self->spill, o);
}

static Values *
values_make(int linked)
{
    Values *self = PyObject_New(Values, &ValuesType);
    if (self == NULL)
        return NULL;
    self->v = NULL;
    self->n = self->cap = 0;
    self->spill = NULL;
    self->linked = linked;
    self->prev = self->next = self;
    if (linked) {
        self->next = &PAIRS;
        self->prev = PAIRS.prev;
        PAIRS.prev->next = self;
        PAIRS.prev = self;
    }
    return self;
}

static PyObject *
values_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Values() takes no arguments");
        return NULL;
    }
    return (PyObject *)values_make(0);
}

static void
values_dealloc(Values *self)
{
    if (self->linked) {
        self->prev->next = self->next;
        self->next->prev = self->prev;
    }
    PyMem_Free(self->v);
    Py_XDECREF(self->spill);
    PyObject_Free(self);
}

static Py_ssize_t
values_len(Values *self)
{
    return self->n + (self->spill ? PyList_GET_SIZE(self->spill) : 0);
}

/* take(): every value as a list of ints (the spilled ones last); empty afterwards. */
static PyObject *
values_take(Values *self, PyObject *unused)
{
    PyObject *out = PyList_New(self->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *x = PyLong_FromLongLong(self->v[i]);
        if (x == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, x);
    }
    if (self->spill != NULL) {
        Py_ssize_t n = PyList_GET_SIZE(out);
        if (PyList_SetSlice(out, n, n, self->spill) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        Py_CLEAR(self->spill);
    }
    self->n = 0;
    return out;
}

static PyMethodDef values_methods[] = {
    {"take", (PyCFunction)values_take, METH_NOARGS,
     "take($self, /)\n--\n\nEvery value as a list of ints; empty afterwards."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
values_item(Values *self, Py_ssize_t i)
{
    if (i >= 0 && i < self->n)
        return PyLong_FromLongLong(self->v[i]);
    if (i >= self->n && i < values_len(self))
        return Py_NewRef(PyList_GET_ITEM(self->spill, i - self->n));
    PyErr_SetString(PyExc_IndexError, "Values index out of range");
    return NULL;
}

static PySequenceMethods values_as_sequence = {
    .sq_length = (lenfunc)values_len,
    .sq_item = (ssizeargfunc)values_item,
};

static PyTypeObject ValuesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "syncperf._speedups.Values",
    .tp_basicsize = sizeof(Values),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Integers queued for a histogram series (or a FastPath's ended pairs).",
    .tp_new = values_new,
    .tp_dealloc = (destructor)values_dealloc,
    .tp_methods = values_methods,
    .tp_as_sequence = &values_as_sequence,
};

/* forget_pending(): in a forked child, the parent's pairs dropped (the parent folds them;
 * their markers went with the parent's queue). */
static PyObject *
forget_pending(PyObject *mod, PyObject *unused)
{
    for (Values *v = PAIRS.next; v != &PAIRS; v = v->next) {
        v->n = 0;
        Py_CLEAR(v->spill);
    }
    Py_RETURN_NONE;
}

/* ---- Count: the in-flight count of an operation name (sync.operations.active) ---------- */

/* What a deque of Nones did (append(None), pop(), clear(), len()), as one integer. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
} Count;

static PyTypeObject CountType;

static PyObject *
count_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Count() takes no arguments");
        return NULL;
    }
    Count *self = (Count *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->n = 0;
    return (PyObject *)self;
}

/* `inflight` one up (inflight.append(None)) or down (inflight.pop()): a Count's here. */
static int
count_step(PyObject *inflight, int up)
{
    if (Py_IS_TYPE(inflight, &CountType)) {
        Count *count = (Count *)inflight;
        if (!up && count->n == 0) {
            PyErr_SetString(PyExc_IndexError, "pop from an empty count");
            return -1;
        }
        count->n += up ? 1 : -1;
        return 0;
    }
    PyObject *r = up ? PyObject_CallMethodOneArg(inflight, s_append, Py_None)
                     : PyObject_CallMethodNoArgs(inflight, s_pop);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static PyObject *
count_append(Count *self, PyObject *unused)
{
    return count_step((PyObject *)self, 1) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
count_pop(Count *self, PyObject *unused)
{
    return count_step((PyObject *)self, 0) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
count_clear(Count *self, PyObject *unused)
{
    self->n = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t
count_len(Count *self)
{
    return self->n;
}

static PyMethodDef count_methods[] = {
    {"append", (PyCFunction)count_append, METH_O, "One more (the argument is not kept)."},
    {"pop", (PyCFunction)count_pop, METH_NOARGS, "One less; IndexError at none."},
    {"clear", (PyCFunction)count_clear, METH_NOARGS, "None left."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods count_as_sequence = {.sq_length = (lenfunc)count_len};

static PyTypeObject CountType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "syncperf._speedups.Count",
    .tp_basicsize = sizeof(Count),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An in-flight count: append(None), pop(), clear() and len() of a deque of Nones.",
    .tp_new = count_new,
    .tp_methods = count_methods,
    .tp_as_sequence = &count_as_sequence,
};

/* What end reads of an operation's runtime and series, when the caller has them at hand
 * (FastPath caches them per runtime); NULL fields: read here. */
typedef struct {
    PyObject *ended, *inflight, *log;
    PyObject *queue;  /* ended.append (bound) */
    PyObject *marker; /* (bound, pairs): a plain operation's record (Values) */
} Hints;

static const Hints NO_HINTS = {NULL, NULL, NULL, NULL, NULL};
#define HINTS_N 5
#define HINTS_AT(h) {&(h)->ended, &(h)->inflight, &(h)->log, &(h)->queue, &(h)->marker}

static PyObject *
hinted(PyObject *hint, PyObject *owner, PyObject *name)
{
    if (hint != NULL)
        return Py_NewRef(hint);
    if (owner == NULL) { /* a field deleted while Python code ran */
        PyErr_SetString(PyExc_AttributeError, "an operation field is gone");
        return NULL;
    }
    return PyObject_GetAttr(owner, name);
}

/* ---- end_plain ------------------------------------------------------------------------- */

static int
truthy(PyObject *v)
{
    if (v == Py_None || v == Py_False || v == ZERO)
        return 0;
    if (v == Py_True)
        return 1;
    if (PyFrozenSet_CheckExact(v))
        return PySet_GET_SIZE(v) != 0;
    return PyObject_IsTrue(v);
}

/* `o` (an exact int) as a long long; 0 (no error) when it does not fit one. */
static int
read_ll(PyObject *o, long long *out)
{
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(o, &overflow);
    return !overflow && !(*out == -1 && PyErr_Occurred());
}

/* Whether end_impl can end `op` (it changes nothing when it cannot); not an ended one (one
 * open across fork() in the child: the Python end leaves it uncounted). */
static int
plain_end(Op *op)
{
    if (op->ended == Py_True || op->span == NULL || op->parent_ctx == NULL ||
        (op->span != Py_None && op->parent_ctx != Py_None) ||
        op->observed != Py_None || op->entity_items != Py_None || op->series == NULL ||
        op->series == Py_None || op->rt == NULL || op->start_ns == NULL || !PyLong_CheckExact(op->start_ns) ||
        op->error_type == NULL || op->conflicts == NULL || op->own_ns == NULL ||
        !PyLong_CheckExact(op->own_ns) || op->resumed_ns == NULL ||
        !PyLong_CheckExact(op->resumed_ns) || op->entity == NULL || op->ctx_token == NULL ||
        op->batch == NULL || op->idempotent == NULL || op->items == NULL ||
        op->conflict_detail == NULL || op->db_queries == NULL || op->db_ns == NULL ||
        op->ended == NULL)
        return 0;
    PyObject *entity = GET(op->series, entity);
    if (entity == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(entity); /* the series holds it */
    return entity == op->entity;
}

/* The log check of _lifecycle.end: log.end(op, outcome, etype, duration_ns, t2) when due. */
static int
maybe_log(Op *op, const Hints *h, PyObject *outcome, PyObject *etype, long long duration,
          long long t2)
{
    PyObject *log = hinted(h->log, op->series, s_log);
    if (log == NULL)
        return -1;
    int due = 0;
    PyObject *on = GET(log, on);
    if (on == NULL)
        goto fail;
    static Found seen;
    PyObject *flag = PyDict_CheckExact(on) ? Py_XNewRef(item_of(on, outcome, &seen)) : NULL;
    if (flag == NULL && !PyErr_Occurred())
        flag = PyObject_GetItem(on, outcome); /* (the KeyError, as Python raises it) */
    Py_DECREF(on);
    if (flag == NULL)
        goto fail;
    due = truthy(flag);
    Py_DECREF(flag);
    if (due < 0)
        goto fail;
    if (!due) {
        PyObject *slow = GET(log, slow_ns);
        if (slow == NULL)
            goto fail;
        static Read slow_read, next_read;
        long long slow_ns = read_of(slow, &slow_read);
        Py_DECREF(slow);
        if (slow_ns == -1 && PyErr_Occurred())
            goto fail;
        PyObject *next = GET(log, next_check);
        if (next == NULL)
            goto fail;
        long long next_check = read_of(next, &next_read);
        Py_DECREF(next);
        if (next_check == -1 && PyErr_Occurred())
            goto fail;
        due = duration > slow_ns || t2 >= next_check;
    }
    if (due) {
        PyObject *d = PyLong_FromLongLong(duration), *t = PyLong_FromLongLong(t2);
        /* (the log reads the operation's fields itself) */
        PyObject *r = NULL;
        if (d != NULL && t != NULL)
            r = PyObject_CallMethodObjArgs(log, s_end, (PyObject *)op, outcome, etype, d, t,
                                           NULL);
        Py_XDECREF(d);
        Py_XDECREF(t);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
    }
    Py_DECREF(log);
    return 0;
fail:
    Py_DECREF(log);
    return -1;
}

/* Whether an operation's record holds nothing but its duration and overhead: a success
 * with no batch size, items, conflicts, idempotency or queries (its fields all there), while
 * no engine is instrumented (Runtime.db_instrumented: each operation then records its query
 * count, decided here, as it ends, not when it is folded). */
static int
only_times(Op *op, PyObject *outcome, PyObject *etype)
{
    return outcome == S_SUCCESS && etype == Py_None && op->rt != NULL &&
           op->series != NULL && op->entity != NULL && op->batch == Py_None &&
           op->items == Py_None && op->conflict_detail == Py_None &&
           op->idempotent == Py_False && op->db_queries == ZERO && op->db_ns == ZERO &&
           _PyType_Lookup(Py_TYPE(op->rt), s_db_instrumented) == ZERO; /* (borrowed) */
}

/* The record _lifecycle.end queues (see _fold._queue), a new reference; NULL with an error. */
static PyObject *
full_record(Op *op, PyObject *outcome, PyObject *etype, long long duration, long long own_ns)
{
    PyObject *items[15] = {op->series, etype, outcome, NULL, Py_None, NULL, Py_None, Py_None,
                           op->entity, op->batch, op->idempotent, op->items,
                           op->conflict_detail, op->db_queries, op->db_ns};
    int gone = op->rt == NULL; /* a field deleted while Python code ran (`ended` above) */
    for (int i = 0; i < 15; i++)
        gone = gone || (items[i] == NULL && i != 3 && i != 5);
    if (gone) {
        PyErr_SetString(PyExc_AttributeError, "an operation field is gone");
        return NULL;
    }
    PyObject *record = PyTuple_New(15);
    items[3] = PyLong_FromLongLong(duration);
    items[5] = PyLong_FromLongLong(own_ns);
    if (record == NULL || items[3] == NULL || items[5] == NULL) {
        Py_XDECREF(record);
        Py_XDECREF(items[3]);
        Py_XDECREF(items[5]);
        return NULL;
    }
    for (int i = 0; i < 15; i++)
        PyTuple_SET_ITEM(record, i, i == 3 || i == 5 ? items[i] : Py_NewRef(items[i]));
    return record;
}

/* Queue the record, maybe fold (the try block of _lifecycle.end); -1 with an error set. */
static int
queue_record(Op *op, const Hints *h, PyObject *outcome, PyObject *etype, long long t2,
             long long duration, long long own_ns, long long resumed)
{
    long long now;
    if (now_ns(&now) < 0)
        return -1;
    PyObject *ended = hinted(h->ended, op->rt, s_ended);
    if (ended == NULL)
        return -1;
    long long own = own_ns + now - (resumed ? resumed : t2);
    Values *pairs = h->marker ? (Values *)PyTuple_GET_ITEM(h->marker, 1) : NULL;
    PyObject *record = NULL; /* (none: only its pair, the marker queued already) */
    Py_ssize_t held = 0;     /* the pairs queued, this one's included */
    if (pairs != NULL && op->series == PyTuple_GET_ITEM(h->marker, 0) &&
        only_times(op, outcome, etype)) { /* (not one whose entity an extractor set) */
        if (values_reserve(pairs, 2) < 0) {
            Py_DECREF(ended);
            return -1;
        }
        if (pairs->n == 0) /* the first since the last fold: its marker queued (below) */
            record = Py_NewRef(h->marker);
        pairs->v[pairs->n++] = duration;
        pairs->v[pairs->n++] = own;
        held = pairs->n / 2;
    } else if ((record = full_record(op, outcome, etype, duration, own)) == NULL) {
        Py_DECREF(ended);
        return -1;
    }
    if (record != NULL) {
        PyObject *r = h->queue != NULL ? PyObject_CallOneArg(h->queue, record)
                                       : PyObject_CallMethodOneArg(ended, s_append, record);
        if (r == NULL && held) /* no marker: no pair either */
            pairs->n = 0;
        Py_DECREF(record);
        if (r == NULL) {
            Py_DECREF(ended);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_ssize_t queued = PyObject_Length(ended);
    Py_DECREF(ended);
    if (queued < 0)
        return -1;
    PyObject *successor = GET(op->rt, successor);
    if (successor == NULL)
        return -1;
    int wait = queued >= MAX_QUEUED || held >= MAX_QUEUED || successor != Py_None;
    Py_DECREF(successor);
    if (wait || queued >= FOLD_AT || held >= PAIRS_AT) {
        PyObject *r;
        r = PyObject_CallFunctionObjArgs(FOLD_HOOK, op->rt, wait ? Py_True : Py_False, NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* After its context token failed to reset CURRENT (ended in another context): CURRENT there
 * cleared only if it holds `op` (a copy of its own context), never another operation. */
static int
leave_foreign(Op *op)
{
    PyObject *current = NULL;
    if (PyContextVar_Get(CURRENT, NULL, &current) < 0)
        return -1;
    int own = current == (PyObject *)op;
    Py_XDECREF(current);
    if (!own)
        return 0;
    PyObject *token = PyContextVar_Set(CURRENT, Py_None);
    if (token == NULL)
        return -1;
    Py_DECREF(token);
    return 0;
}

static int
leave_inflight(Op *op, const Hints *h)
{
    PyObject *inflight = hinted(h->inflight, op->series, s_inflight);
    int r = inflight ? count_step(inflight, 0) : -1;
    Py_XDECREF(inflight);
    return r;
}

/* clocks[name] (borrowed), a RuntimeError when missing */
static PyObject *
named(PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(CLOCKS, name);
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_RuntimeError, "the clocks namespace has no %U", name);
    return v;
}

/* _lifecycle._end_span's `finally` for an operation its sampler dropped: the unsampled span
 * context it left current (op._token, None if none) detached with the clocks namespace's
 * `detach` (_lifecycle's: _tracing.current.detach, reset here on the default runtime context
 * as it resets it; a token that does not reset goes to it, which logs it). */
static int
detach_unsampled(Op *op)
{
    if (op->token == NULL || op->token == Py_None)
        return 0;
    PyObject *detach = named(s_detach);
    if (detach == NULL)
        return -1;
    if (detach == DETACH_SLOW && CONTEXT_VAR != NULL && PyContextToken_CheckExact(op->token)) {
        PyObject *in_force = PyDict_GetItemWithError(CONTEXT_NS, s_runtime_context);
        if (in_force == RUNTIME && PyContextVar_Reset(CONTEXT_VAR, op->token) == 0)
            return 0;
        if (in_force == NULL && PyErr_Occurred())
            return -1;
        PyErr_Clear();
    }
    PyObject *r = PyObject_CallOneArg(detach, op->token);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* _lifecycle._end_span(rt, op, outcome, etype, None, duration, lag, t2) for a sampled
 * operation (the clocks namespace's, looked up per call): None, or the Exception a span
 * processor raised; NULL with anything else raised. */
static PyObject *
end_span(Op *op, PyObject *outcome, PyObject *etype, long long duration, long long lag,
         long long t2)
{
    PyObject *fn = named(s_end_span);
    if (fn == NULL)
        return NULL;
    PyObject *rt = Py_NewRef(op->rt), *r = NULL;
    PyObject *d = PyLong_FromLongLong(duration), *l = PyLong_FromLongLong(lag);
    PyObject *t = PyLong_FromLongLong(t2);
    if (d != NULL && l != NULL && t != NULL) {
        PyObject *argv[8] = {rt, (PyObject *)op, outcome, etype, Py_None, d, l, t};
        r = PyObject_Vectorcall(fn, argv, 8, NULL);
    }
    Py_DECREF(rt);
    Py_XDECREF(d);
    Py_XDECREF(l);
    Py_XDECREF(t);
    return r;
}

/* _lifecycle.end(op, None, end_ns, now) for a plain operation (`end`: end_ns, when `has_end`;
 * a sampled one's span is ended by _lifecycle._end_span, called from here):
 * 1 ended, 0 not plain (untouched; *clock: the end time read, for the Python end to use, or
 * `now`), -1 error (as the Python end raises: the in-flight count left). */
static int
end_impl(Op *op, long long now, int has_end, long long end, const Hints *h, long long *clock)
{
    *clock = now;
    long long start, own_ns, resumed;
    if (!plain_end(op) || !read_ll(op->start_ns, &start) || !read_ll(op->own_ns, &own_ns) ||
        !read_ll(op->resumed_ns, &resumed))
        return 0; /* (times past 2**63: Python's big ints take them) */
    long long t2 = now;
    if (!t2 && now_ns(&t2) < 0)
        return -1;
    *clock = t2;
    long long lag = 0; /* min(max(t2 - end_ns, 0), t2 - start) */
    if (has_end) {
        const long long far = 1LL << 61; /* beyond: Python's big ints take them */
        if (end < -far || end > far || t2 < -far || t2 > far || start < -far || start > far)
            return 0;
        lag = t2 - end < 0 ? 0 : t2 - end;
        lag = lag < t2 - start ? lag : t2 - start;
    }
    long long duration = t2 - lag - start;
    PyObject *outcome, *etype;
    if (op->error_type != Py_None) {
        outcome = S_ERROR;
        etype = op->error_type;
    } else {
        int conflicted = truthy(op->conflicts);
        if (conflicted < 0)
            return -1;
        outcome = conflicted ? S_CONFLICT : S_SUCCESS;
        etype = Py_None;
    }
    if (op->parent_ctx != Py_None) { /* not sampled: Python rescues an error, conflict, slow one */
        if (outcome != S_SUCCESS)
            return 0;
        PyObject *slow = PyObject_GetAttr(op->rt, s_slow_ns);
        if (slow == NULL)
            return -1;
        long long slow_ns = AS_LL(slow);
        Py_DECREF(slow);
        if (slow_ns == -1 && PyErr_Occurred())
            return -1;
        if (duration > slow_ns)
            return 0;
    }
    Py_XSETREF(op->ended, Py_NewRef(Py_True));
    if (!PyContextToken_CheckExact(op->ctx_token)) {
        PyErr_SetString(PyExc_TypeError, "an operation's context token is not a Token");
        return -1;
    }
    if (PyContextVar_Reset(CURRENT, op->ctx_token) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyErr_Clear(); /* ended in another context: as _lifecycle.end */
        if (leave_foreign(op) < 0)
            return -1;
        if (PyObject_SetAttr((PyObject *)op, s_token, Py_None) < 0) /* the span's token */
            return -1;
    }
    /* It holds the value before: ended operations would chain through it (as _lifecycle.end) */
    Py_SETREF(op->ctx_token, Py_NewRef(Py_None));
    Py_INCREF(etype);
    PyObject *failure = Py_NewRef(Py_None); /* what a span processor raised */
    if (op->span != Py_None) { /* sampled: ended (and its context detached) by _end_span */
        Py_SETREF(failure, end_span(op, outcome, etype, duration, lag, t2));
        if (failure == NULL) { /* raised past its `except Exception`: as out of the Python end */
            Py_DECREF(etype);
            return -1;
        }
    } else if (op->parent_ctx != Py_None && detach_unsampled(op) < 0) {
        Py_DECREF(failure);
        Py_DECREF(etype);
        return -1;
    }
    int failed = queue_record(op, h, outcome, etype, t2, duration, own_ns, resumed);
    /* finally: the in-flight count, whatever happened */
    PyObject *et = NULL, *ev = NULL, *tb = NULL;
    if (failed < 0)
        PyErr_Fetch(&et, &ev, &tb);
    if (leave_inflight(op, h) < 0) {
        if (et != NULL) { /* the first error wins, as a finally that raises would not */
            PyErr_Clear();
            PyErr_Restore(et, ev, tb);
        }
        failed = -1;
    } else if (failed < 0) {
        PyErr_Restore(et, ev, tb);
    }
    if (!failed && failure != Py_None) { /* rt.internal_error("span_end_failed", failure) */
        PyObject *say = hinted(NULL, op->rt, s_internal_error_name); /* (rt: maybe gone) */
        PyObject *said = say == NULL ? NULL
                                     : PyObject_CallFunctionObjArgs(say, s_span_end_failed,
                                                                    failure, NULL);
        failed = said == NULL ? -1 : 0;
        Py_XDECREF(say);
        Py_XDECREF(said);
    }
    Py_DECREF(failure);
    if (failed < 0 || maybe_log(op, h, outcome, etype, duration, t2) < 0) {
        Py_DECREF(etype);
        return -1;
    }
    Py_DECREF(etype);
    /* (Python code ran since the checks: a field may be gone) */
    Py_XSETREF(op->items, Py_NewRef(Py_None));
    Py_XSETREF(op->conflict_detail, Py_NewRef(Py_None));
    Py_XSETREF(op->observed, Py_NewRef(Py_None));
    return 1;
}

static PyObject *
end_plain(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "end_plain(op, now, end_ns=None)");
        return NULL;
    }
    PyObject *end_ns = nargs == 3 ? args[2] : Py_None;
    if (!PyObject_TypeCheck(args[0], &OpType) || !PyLong_CheckExact(args[1]) ||
        (end_ns != Py_None && !PyLong_CheckExact(end_ns)))
        return Py_NewRef(args[1]);
    long long now, end = 0;
    if (!read_ll(args[1], &now) || (end_ns != Py_None && !read_ll(end_ns, &end))) {
        if (PyErr_Occurred())
            return NULL;
        return Py_NewRef(args[1]);
    }
    long long clock;
    int r = end_impl((Op *)args[0], now, end_ns != Py_None, end, &NO_HINTS, &clock);
    if (r < 0)
        return NULL;
    return PyLong_FromLongLong(r ? -1 : clock); /* -1: ended (no clock reads below 0) */
}

/* ---- fold ------------------------------------------------------------------------------ */

/* The last series a fold queued into: most records in a row share one (a one-entry cache;
 * the fold holds the references). */
typedef struct {
    PyObject *bound, *success, *overhead;
} Last;

static void
last_clear(Last *last)
{
    Py_CLEAR(last->bound);
    Py_CLEAR(last->success);
    Py_CLEAR(last->overhead);
}

/* The Values of `series` in `queued` (borrowed), made on first use. */
static PyObject *
values_of(PyObject *queued, PyObject *series)
{
    PyObject *values = PyDict_GetItemWithError(queued, series);
    if (values == NULL && !PyErr_Occurred()) {
        values = (PyObject *)values_make(0);
        if (values == NULL)
            return NULL;
        int r = PyDict_SetItem(queued, series, values);
        Py_DECREF(values); /* the dict holds it */
        if (r < 0)
            return NULL;
    }
    if (values != NULL && !Py_IS_TYPE(values, &ValuesType)) {
        PyErr_SetString(PyExc_TypeError, "a fold's queue holds Values");
        return NULL;
    }
    return values;
}

static int
queue_value(PyObject *queued, PyObject *series, PyObject *value)
{
    PyObject *values = values_of(queued, series);
    return values == NULL ? -1 : values_push_obj((Values *)values, value);
}

/* The success and overhead value lists of `bound` (borrowed, held by `queued`). */
static int
lists_of(Last *last, PyObject *queued, PyObject *bound)
{
    if (bound == last->bound)
        return 0;
    last_clear(last);
    PyObject *success = GET(bound, success);
    PyObject *overhead = success ? GET(bound, overhead) : NULL;
    PyObject *a = overhead ? values_of(queued, success) : NULL;
    PyObject *b = a ? values_of(queued, overhead) : NULL;
    Py_XDECREF(success);
    Py_XDECREF(overhead);
    if (b == NULL)
        return -1;
    last->bound = Py_NewRef(bound);
    last->success = Py_NewRef(a);
    last->overhead = Py_NewRef(b);
    return 0;
}

/* What a fold fills: per series, nanoseconds (`queued`) and counts (`counted`, scale 1). */
typedef struct {
    PyObject *queued, *counted, *conflicts, *rest;
    int db;
} Into;

/* `series.value += n` and `series.touched = True` (SumSeries.add without its frame). */
static int
sum_add(PyObject *series, PyObject *n)
{
    PyObject **field = slot_of(series, s_value, &SLOTS[SL_value]);
    PyObject **touched = field ? slot_of(series, s_touched, &SLOTS[SL_touched]) : NULL;
    if (touched != NULL && *field != NULL) {
        PyObject *sum = PyNumber_Add(*field, n);
        if (sum == NULL)
            return -1;
        Py_SETREF(*field, sum);
        Py_XSETREF(*touched, Py_NewRef(Py_True));
        return 0;
    }
    PyObject *value = PyObject_GetAttr(series, s_value);
    PyObject *sum = value ? PyNumber_Add(value, n) : NULL;
    Py_XDECREF(value);
    int r = sum ? PyObject_SetAttr(series, s_value, sum) : -1;
    Py_XDECREF(sum);
    return r < 0 ? -1 : PyObject_SetAttr(series, s_touched, Py_True);
}

/* The sync.conflicts key of one recorded (entity, resolution) pair: (entity or the
 * operation's, resolution), as _fold._rest makes it; NULL with no error when not a pair. */
static PyObject *
conflict_key(PyObject *pair, PyObject *entity)
{
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
        return NULL;
    PyObject *own = PyTuple_GET_ITEM(pair, 0);
    int t = truthy(own);
    if (t < 0)
        return NULL;
    return PyTuple_Pack(2, t ? own : entity, PyTuple_GET_ITEM(pair, 1));
}

/* Record's items, conflicts and batch size when every series they go to is bound already:
 * 1 done, 0 left for `rest` (nothing changed), -1 error. */
static int
fold_counts(PyObject *record, PyObject *bound, const Into *into)
{
    PyObject *batch = PyTuple_GET_ITEM(record, 9), *items = PyTuple_GET_ITEM(record, 11);
    PyObject *conflicts = PyTuple_GET_ITEM(record, 12), *entity = PyTuple_GET_ITEM(record, 8);
    if ((items != Py_None && !PyDict_CheckExact(items)) ||
        (conflicts != Py_None && !PyDict_CheckExact(conflicts)))
        return 0;
    PyObject *counters = NULL, *key, *n;
    Py_ssize_t pos = 0;
    if (items != Py_None && PyDict_GET_SIZE(items)) {
        counters = GET(bound, items);
        if (counters == NULL)
            return -1;
        if (!PyDict_CheckExact(counters)) {
            Py_DECREF(counters);
            return 0;
        }
        while (PyDict_Next(items, &pos, &key, &n)) /* every change bound already? */
            if (PyDict_GetItemWithError(counters, key) == NULL) {
                Py_DECREF(counters);
                return PyErr_Occurred() ? -1 : 0;
            }
    }
    if (conflicts != Py_None && PyDict_GET_SIZE(conflicts)) {
        for (pos = 0; PyDict_Next(conflicts, &pos, &key, &n);) {
            PyObject *k = conflict_key(key, entity);
            PyObject *found = k ? PyDict_GetItemWithError(into->conflicts, k) : NULL;
            Py_XDECREF(k);
            if (found == NULL) {
                Py_XDECREF(counters);
                return PyErr_Occurred() ? -1 : 0;
            }
        }
        for (pos = 0; PyDict_Next(conflicts, &pos, &key, &n);) {
            PyObject *k = conflict_key(key, entity);
            PyObject *found = k ? PyDict_GetItemWithError(into->conflicts, k) : NULL;
            Py_XDECREF(k);
            if (found == NULL || sum_add(found, n) < 0) {
                Py_XDECREF(counters);
                return -1;
            }
        }
    }
    if (counters != NULL) {
        for (pos = 0; PyDict_Next(items, &pos, &key, &n);) {
            PyObject *found = PyDict_GetItemWithError(counters, key);
            if (found == NULL || sum_add(found, n) < 0) {
                if (found == NULL && !PyErr_Occurred())
                    PyErr_SetString(PyExc_KeyError, "an items series was unbound meanwhile");
                Py_DECREF(counters);
                return -1;
            }
        }
        Py_DECREF(counters);
    }
    if (batch != Py_None) {
        PyObject *series = GET(bound, batch);
        int r = series ? queue_value(into->counted, series, batch) : -1;
        Py_XDECREF(series);
        return r < 0 ? -1 : 1;
    }
    return 1;
}

/* One record: its duration and overhead queued, its counts recorded (in Python, through
 * `rest(record)`, when it has more than items, conflicts and a batch size to record). */
static int
fold_one(PyObject *record, const Into *into, Last *last)
{
    if (!PyTuple_CheckExact(record) || PyTuple_GET_SIZE(record) != 15) {
        PyErr_SetString(PyExc_ValueError, "an ended operation's record is not 15 values");
        return -1;
    }
    PyObject *queued = into->queued;
    PyObject *bound = PyTuple_GET_ITEM(record, 0), *etype = PyTuple_GET_ITEM(record, 1);
    PyObject *outcome = PyTuple_GET_ITEM(record, 2);
    if (lists_of(last, queued, bound) < 0)
        return -1;
    int r;
    if (etype == Py_None && outcome == S_SUCCESS) {
        r = values_push_obj((Values *)last->success, PyTuple_GET_ITEM(record, 3));
    } else {
        PyObject *series;
        if (etype != Py_None)
            series = PyObject_CallMethodOneArg(bound, s_error, etype);
        else if (PyUnicode_Check(outcome) && PyUnicode_Compare(outcome, S_CONFLICT) == 0)
            series = PyObject_CallMethodNoArgs(bound, s_conflicted);
        else
            series = GET(bound, success);
        if (series == NULL)
            return -1;
        r = queue_value(queued, series, PyTuple_GET_ITEM(record, 3));
        Py_DECREF(series);
    }
    if (r < 0)
        return -1;
    int more = into->db || PyTuple_GET_ITEM(record, 6) != Py_None; /* db time, client */
    static const int flags[] = {4, 10, 13}; /* other entities' items, idempotent, queries */
    for (int i = 0; !more && i < 3; i++) {
        more = truthy(PyTuple_GET_ITEM(record, flags[i]));
        if (more < 0)
            return -1;
    }
    if (!more) {
        more = fold_counts(record, bound, into);
        if (more < 0)
            return -1;
        more = !more;
    }
    if (more) {
        PyObject *done = PyObject_CallOneArg(into->rest, record);
        if (done == NULL)
            return -1;
        Py_DECREF(done);
    }
    return values_push_obj((Values *)last->overhead, PyTuple_GET_ITEM(record, 5));
}

/* A FastPath's marker (bound, pairs): the pairs its plain operations queued since the last
 * fold (the first of its markers takes them all; the others find none), each a success whose
 * duration and overhead are queued. On a failure its pairs are let go (a later operation
 * queues a marker again), `*lost` of them. */
static int
fold_pairs(PyObject *marker, const Into *into, Last *last, Py_ssize_t *lost)
{
    PyObject *bound = PyTuple_GET_ITEM(marker, 0);
    Values *pairs = (Values *)PyTuple_GET_ITEM(marker, 1);
    if (!Py_IS_TYPE(pairs, &ValuesType)) {
        PyErr_SetString(PyExc_ValueError, "a marker is not (bound, pairs)");
        return -1;
    }
    if (pairs->n == 0)
        return 0;
    int r = lists_of(last, into->queued, bound); /* (may run code: read n after it) */
    Py_ssize_t n = pairs->n;
    Values *success = (Values *)last->success, *overhead = (Values *)last->overhead;
    if (r == 0 && n % 2) {
        PyErr_SetString(PyExc_ValueError, "a pair is half queued");
        r = -1;
    }
    if (r < 0 || values_reserve(success, n / 2) < 0 || values_reserve(overhead, n / 2) < 0) {
        *lost = n / 2 > 1 ? n / 2 : 1;
        pairs->n = 0;
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i += 2) {
        success->v[success->n++] = pairs->v[i];
        overhead->v[overhead->n++] = pairs->v[i + 1];
    }
    pairs->n = 0;
    return 0;
}

/* fold(ended, queued, counted, failures, rest, db_instrumented, conflict_series): take what
 * `ended` holds now. */
static PyObject *
fold(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[2]) ||
        !PyList_CheckExact(args[3]) || !PyDict_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError, "fold(ended, queued: dict, counted: dict, "
                                         "failures: list, rest, db, conflict_series: dict)");
        return NULL;
    }
    PyObject *ended = args[0], *failures = args[3];
    Into into = {args[1], args[2], args[6], args[4], truthy(args[5])};
    if (into.db < 0)
        return NULL;
    Py_ssize_t left = PyObject_Length(ended);
    if (left < 0)
        return NULL;
    PyObject *take = PyObject_GetAttr(ended, s_popleft);
    if (take == NULL)
        return NULL;
    Last last = {NULL, NULL, NULL};
    while (left-- > 0) {
        PyObject *record = PyObject_CallNoArgs(take);
        Py_ssize_t lost = 1; /* operations a failure loses */
        int r = -1;
        if (record != NULL && PyTuple_CheckExact(record) && PyTuple_GET_SIZE(record) == 2)
            r = fold_pairs(record, &into, &last, &lost);
        else if (record != NULL)
            r = fold_one(record, &into, &last);
        Py_XDECREF(record);
        if (r < 0) { /* the rest of this operation is lost (counted), not others */
            last_clear(&last); /* a failed record may have left it half set */
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                goto fail;
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            if (tb != NULL)
                PyException_SetTraceback(ev, tb);
            int appended = 0;
            while (appended == 0 && lost-- > 0) /* one failure counted per operation */
                appended = PyList_Append(failures, ev);
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
            if (appended < 0)
                goto fail;
        }
    }
    last_clear(&last);
    Py_DECREF(take);
    Py_RETURN_NONE;
fail:
    last_clear(&last);
    Py_DECREF(take);
    return NULL;
}

/* ---- record: _metrics.batches.record_ns in one pass ---------------------------------- */

#define MAX_BOUNDS 128

/* record(series, values, limits, scale): `series.record(v / scale)` for each non-negative v
 * of `values` (ints); `limits[i]`: the largest v in bucket i. True when recorded; False
 * (nothing changed) when a value or the series is not what this takes (Python does it). */
static PyObject *
record(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Values *given = nargs == 4 && Py_IS_TYPE(args[1], &ValuesType) ? (Values *)args[1] : NULL;
    if (nargs != 4 || (given == NULL && !PyList_CheckExact(args[1])) ||
        !PyTuple_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "record(series, values: list | Values, limits: tuple, scale)");
        return NULL;
    }
    PyObject *series = args[0], *values = args[1], *limits = args[2], *scale = args[3];
    if (given != NULL && given->spill != NULL)
        Py_RETURN_FALSE; /* (values past a long long) */
    Py_ssize_t nb = PyTuple_GET_SIZE(limits), n = given ? given->n : PyList_GET_SIZE(values);
    if (nb > MAX_BOUNDS)
        Py_RETURN_FALSE;
    long long lim[MAX_BOUNDS], cnt[MAX_BOUNDS + 1];
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *l = PyTuple_GET_ITEM(limits, i);
        if (!PyLong_CheckExact(l))
            Py_RETURN_FALSE;
        int overflow;
        lim[i] = PyLong_AsLongLongAndOverflow(l, &overflow);
        if (overflow || (lim[i] == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        cnt[i] = 0;
    }
    cnt[nb] = 0;
    long long total = 0, low = LLONG_MAX, high = -1, recorded = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        long long v;
        int overflow = 0;
        if (given != NULL) {
            v = given->v[k];
        } else {
            PyObject *o = PyList_GET_ITEM(values, k);
            if (!PyLong_CheckExact(o))
                Py_RETURN_FALSE;
            v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow > 0 || (v == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                Py_RETURN_FALSE;
            }
        }
        if (overflow < 0 || v < 0) /* a placeholder: not recorded */
            continue;
        Py_ssize_t lo = 0, hi = nb; /* the first bucket whose limit is >= v */
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (lim[mid] < v)
                lo = mid + 1;
            else
                hi = mid;
        }
        cnt[lo]++;
        if (__builtin_add_overflow(total, v, &total))
            Py_RETURN_FALSE;
        if (v < low)
            low = v;
        if (v > high)
            high = v;
        recorded++;
    }
    if (!recorded)
        Py_RETURN_TRUE;
    PyObject *counts = GET(series, counts);
    if (counts == NULL)
        return NULL;
    if (!PyList_CheckExact(counts) || PyList_GET_SIZE(counts) != nb + 1) {
        Py_DECREF(counts);
        Py_RETURN_FALSE;
    }
    for (Py_ssize_t i = 0; i <= nb; i++) {
        if (!cnt[i])
            continue;
        PyObject *add = PyLong_FromLongLong(cnt[i]);
        PyObject *sum = add ? PyNumber_Add(PyList_GET_ITEM(counts, i), add) : NULL;
        Py_XDECREF(add);
        if (sum == NULL || PyList_SetItem(counts, i, sum) < 0) { /* SetItem steals sum */
            Py_DECREF(counts);
            return NULL;
        }
    }
    Py_DECREF(counts);
    /* series.sum += total / scale; min and max likewise, as Python divides them; at scale 1
     * (counts) the ints themselves, exact, as Python's record_ns keeps them */
    int whole = PyLong_CheckExact(scale) && PyLong_AsLongLong(scale) == 1;
    if (!whole && PyErr_Occurred())
        PyErr_Clear(); /* a scale past long long: not 1 */
    long long ends[3] = {total, low, high};
    PyObject *names[3] = {s_sum, s_min, s_max};
    for (int i = 0; i < 3; i++) {
        PyObject *v = PyLong_FromLongLong(ends[i]);
        PyObject *q = v && !whole ? PyNumber_TrueDivide(v, scale) : v;
        if (!whole)
            Py_XDECREF(v);
        PyObject *cur = q ? PyObject_GetAttr(series, names[i]) : NULL;
        if (cur == NULL) {
            Py_XDECREF(q);
            return NULL;
        }
        PyObject *set = NULL;
        if (i == 0) {
            set = PyNumber_Add(cur, q);
        } else {
            int beyond = PyObject_RichCompareBool(q, cur, i == 1 ? Py_LT : Py_GT);
            if (beyond > 0)
                set = Py_NewRef(q);
            else if (beyond == 0)
                set = Py_NewRef(cur);
        }
        Py_DECREF(cur);
        Py_DECREF(q);
        if (set == NULL)
            return NULL;
        int r = PyObject_SetAttr(series, names[i], set);
        Py_DECREF(set);
        if (r < 0)
            return NULL;
    }
    Py_RETURN_TRUE;
}

/* ---- error handling ------------------------------------------------------------------- */

/* handler(op, exc) for the exception being raised. 0: it is cleared (`consume`); -1: it is
 * raised again; -2: the handler raised (strict mode), with the exception as its context. */
static int
on_error(PyObject *handler, PyObject *op, int consume)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb != NULL)
        PyException_SetTraceback(ev, tb);
    PyObject *r = PyObject_CallFunctionObjArgs(handler, op, ev, NULL);
    if (r == NULL) {
        PyObject *et2, *ev2, *tb2;
        PyErr_Fetch(&et2, &ev2, &tb2);
        PyErr_NormalizeException(&et2, &ev2, &tb2);
        if (ev2 != ev)
            PyException_SetContext(ev2, ev); /* steals ev */
        else
            Py_XDECREF(ev);
        Py_XDECREF(et);
        Py_XDECREF(tb);
        PyErr_Restore(et2, ev2, tb2);
        return -2;
    }
    Py_DECREF(r);
    if (!consume) {
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(tb);
    return 0;
}

/* ---- Phase: extractors run in C --------------------------------------------------------- */

/* What a step does with its extractor's value: give it to `apply`, or the common case of one
 * of _extractors' appliers in C (each hands every other value to its Python twin). */
enum { APPLY, ENTITY, BATCH, CONFLICTS, RUN };

typedef struct {
    int kind;
    PyObject *fn, *apply, *name, *dflt; /* borrowed from the steps tuple */
    Py_ssize_t position;                /* -1: the result */
} Step;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *steps, *failed; /* failed(op, error): an extractor or its applier raised */
    Py_ssize_t n;
    Step *step;
} Phase;

/* _set_entity: a name the operation's series table has already (1: done, 0: to Python). */
static int
set_entity(Op *op, PyObject *value)
{
    if (value == Py_None || (op->entity != NULL && op->entity != Py_None))
        return 1; /* fills in, never replaces */
    if (op->entity == NULL || !PyUnicode_CheckExact(value) || op->rt == NULL ||
        op->series == NULL)
        return 0;
    PyObject *table = GET(op->rt, op_series), *name = NULL, *key = NULL, *found = NULL;
    if (table != NULL && PyDict_CheckExact(table))
        name = GET(op->series, operation);
    if (name != NULL)
        key = PyTuple_Pack(2, name, value);
    if (key != NULL)
        found = Py_XNewRef(PyDict_GetItemWithError(table, key)); /* str keys run no code */
    PyObject *entity = found == NULL ? NULL : GET_AT(found, entity, SL_found_entity);
    Py_XDECREF(table);
    Py_XDECREF(name);
    Py_XDECREF(key);
    if (entity == NULL) {
        Py_XDECREF(found);
        PyErr_Clear(); /* the Python twin meets it again, and answers for it */
        return 0;
    }
    Py_SETREF(op->entity, entity);
    Py_SETREF(op->series, found);
    return 1;
}

/* _set_batch and _add_conflicts for an exact int count. */
static int
add_count(int kind, Op *op, PyObject *value)
{
    long long n, had;
    if (!PyLong_CheckExact(value) || !read_ll(value, &n) || n < 0 || n >= MAX_COUNT)
        return 0;
    if (kind == BATCH) {
        Py_XSETREF(op->batch, Py_NewRef(value));
        return 1;
    }
    if (n == 0)
        return 1;
    PyObject *detail = op->conflict_detail;
    if (op->conflicts == NULL || !PyLong_CheckExact(op->conflicts) ||
        !read_ll(op->conflicts, &had) || had + n >= MAX_COUNT || detail == NULL ||
        (detail != Py_None && !PyDict_CheckExact(detail)))
        return 0;
    PyObject *total = PyLong_FromLongLong(had + n), *was, *now;
    if (total == NULL)
        return -1;
    if (detail == Py_None) {
        detail = PyDict_New();
        if (detail == NULL || PyDict_SetItem(detail, ANY, value) < 0)
            goto fail;
        Py_SETREF(op->conflict_detail, detail);
    } else {
        was = PyDict_GetItemWithError(detail, ANY);
        now = was != NULL ? PyNumber_Add(was, value) : PyErr_Occurred() ? NULL : Py_NewRef(value);
        if (now == NULL || PyDict_SetItem(detail, ANY, now) < 0) {
            Py_XDECREF(now);
            Py_DECREF(total);
            return -1;
        }
        Py_DECREF(now);
    }
    Py_SETREF(op->conflicts, total);
    return 1;
fail:
    Py_XDECREF(detail);
    Py_DECREF(total);
    return -1;
}

/* One extractor: apply(op, fn(value)), its failure counted through `failed`. -1: an error
 * to raise (a BaseException, or the failure in strict mode). */
static int
run_step(Phase *p, const Step *s, PyObject *op, PyObject *args, PyObject *kwargs,
         PyObject *result)
{
    PyObject *value = result;
    if (s->position >= 0) {
        if (s->position < PyTuple_GET_SIZE(args))
            value = PyTuple_GET_ITEM(args, s->position);
        else if (kwargs == Py_None || (value = PyDict_GetItemWithError(kwargs, s->name)) == NULL)
            value = PyErr_Occurred() ? NULL : s->dflt;
    }
    PyObject *v = value == NULL ? NULL : PyObject_CallOneArg(s->fn, value), *r = NULL;
    int done = 0;
    if (v != NULL && s->kind != APPLY && PyObject_TypeCheck(op, &OpType))
        done = s->kind == ENTITY ? set_entity((Op *)op, v) : add_count(s->kind, (Op *)op, v);
    if (done == 0 && v != NULL)
        r = PyObject_CallFunctionObjArgs(s->apply, op, v, NULL);
    Py_XDECREF(v);
    if (done == 1 || r != NULL) {
        Py_XDECREF(r);
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    return on_error(p->failed, op, 1) < 0 ? -1 : 0;
}

/* Every step in order; -1 with an error set. */
static int
run_steps(Phase *p, PyObject *op, PyObject *args, PyObject *kwargs, PyObject *result)
{
    if (!PyTuple_Check(args) || (kwargs != Py_None && !PyDict_Check(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Phase: args is a tuple, kwargs a dict or None");
        return -1;
    }
    for (Py_ssize_t i = 0; i < p->n; i++) {
        const Step *s = &p->step[i];
        if (s->kind == RUN) { /* a Python Run: it counts its own failures */
            PyObject *argv[4] = {op, args, kwargs, result};
            PyObject *r = PyObject_Vectorcall(s->fn, argv, 4, NULL);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        } else if (run_step(p, s, op, args, kwargs, result) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
phase_call(Phase *p, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Phase(op, args, kwargs, result)");
        return NULL;
    }
    if (run_steps(p, args[0], args[1], args[2], args[3]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Phase(steps, failed): `steps`, a tuple of (kind, fn, apply, position, name, default). */
static PyObject *
phase_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *steps, *failed;
    if (!PyArg_ParseTuple(args, "O!O:Phase", &PyTuple_Type, &steps, &failed))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(steps);
    Step *step = PyMem_New(Step, n ? n : 1);
    if (step == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyTuple_GET_ITEM(steps, i);
        Step *s = &step[i];
        if (!PyTuple_Check(t) ||
            !PyArg_ParseTuple(t, "iOOnOO:Phase step", &s->kind, &s->fn, &s->apply, &s->position,
                              &s->name, &s->dflt) ||
            s->kind < APPLY || s->kind > RUN || s->position < -1) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "Phase: a step is not (kind, fn, apply, "
                                                  "position, name, default)");
            PyMem_Free(step);
            return NULL;
        }
    }
    Phase *p = (Phase *)type->tp_alloc(type, 0);
    if (p == NULL) {
        PyMem_Free(step);
        return NULL;
    }
    p->vectorcall = (vectorcallfunc)phase_call;
    p->steps = Py_NewRef(steps);
    p->failed = Py_NewRef(failed);
    p->n = n;
    p->step = step;
    return (PyObject *)p;
}

static int
phase_traverse(Phase *p, visitproc visit, void *arg)
{
    Py_VISIT(p->steps);
    Py_VISIT(p->failed);
    return 0;
}

static int
phase_clear(Phase *p)
{
    p->n = 0; /* the steps borrow from the tuple */
    Py_CLEAR(p->steps);
    Py_CLEAR(p->failed);
    return 0;
}

static void
phase_dealloc(Phase *p)
{
    PyObject_GC_UnTrack(p);
    phase_clear(p);
    PyMem_Free(p->step);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyTypeObject PhaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "syncperf._speedups.Phase",
    .tp_basicsize = sizeof(Phase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "An instrument_sync extractor phase: run(op, args, kwargs, result).",
    .tp_new = phase_new,
    .tp_traverse = (traverseproc)phase_traverse,
    .tp_clear = (inquiry)phase_clear,
    .tp_dealloc = (destructor)phase_dealloc,
    .tp_vectorcall_offset = offsetof(Phase, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ---- FastPath -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fn, *slow, *bind, *settle, *raised, *end, *failed, *runtime, *op_type, *plain;
    PyObject *before, *after; /* the extractor phases (Run or None) */
    int fed;                  /* whether they feed counts (op._fed) */
    PyObject *plain_hit;      /* the type last found in `plain` (or None) */
    PyObject *cached_rt, *cached_bound;
    /* of the cached runtime and series: rt.tracing; rt.ended, bound.inflight, bound.log */
    PyObject *tracing;
    Hints hints;
} Fast;

#define FAST_FIELDS(X)                                                                       \
    X(fn) X(slow) X(bind) X(settle) X(raised) X(end) X(failed) X(runtime) X(op_type) X(plain) \
    X(before) X(after) X(cached_rt) X(cached_bound) X(tracing) X(hints.ended)                \
    X(hints.inflight) X(hints.log) X(hints.queue) X(hints.marker) X(plain_hit)

static PyObject *
call_with(PyObject *fn, PyObject *args, PyObject *kwargs)
{
    return PyObject_Call(fn, args, kwargs == Py_None ? NULL : kwargs);
}

/* The pre-bound series for `rt` (cached per runtime), None when it records nothing, NULL
 * with an error. A new reference. */
static PyObject *
bound_for(Fast *self, PyObject *rt)
{
    if (rt != self->cached_rt) {
        PyObject *bound = PyObject_CallOneArg(self->bind, rt);
        if (bound == NULL)
            return NULL;
        PyObject *v[1 + HINTS_N] = {NULL};
        if (bound != Py_None) {
            v[0] = PyObject_GetAttr(rt, s_tracing);
            v[1] = v[0] ? PyObject_GetAttr(rt, s_ended) : NULL;
            v[2] = v[1] ? PyObject_GetAttr(bound, s_inflight) : NULL;
            v[3] = v[2] ? PyObject_GetAttr(bound, s_log) : NULL;
            v[4] = v[3] ? PyObject_GetAttr(v[1], s_append) : NULL;
            PyObject *pairs = v[4] ? (PyObject *)values_make(1) : NULL;
            v[5] = pairs ? PyTuple_Pack(2, bound, pairs) : NULL;
            Py_XDECREF(pairs);
            if (v[HINTS_N] == NULL) {
                for (int i = 0; i <= HINTS_N; i++)
                    Py_XDECREF(v[i]);
                Py_DECREF(bound);
                return NULL;
            }
        }
        /* all set before any old value goes (a decref may run other threads' code) */
        PyObject **at[1 + HINTS_N] = {&self->tracing}, *old[3 + HINTS_N];
        PyObject **hints[HINTS_N] = HINTS_AT(&self->hints);
        for (int i = 0; i < HINTS_N; i++)
            at[i + 1] = hints[i];
        old[0] = self->cached_bound;
        old[1] = self->cached_rt;
        self->cached_bound = bound;
        self->cached_rt = Py_NewRef(rt);
        for (int i = 0; i <= HINTS_N; i++) {
            old[i + 2] = *at[i];
            *at[i] = v[i];
        }
        for (int i = 0; i < 3 + HINTS_N; i++)
            Py_XDECREF(old[i]);
    }
    return Py_NewRef(self->cached_bound);
}

/* Whether this call can start its operation here: 1 with no span to start, 2 with a span
 * that may start (tracing on, or due to be checked: _lifecycle.span_start decides), 0 with a
 * start to log (the Python wrapper), -1 with an error. */
static int
starts_plain(PyObject *tracing, PyObject *log, long long t0)
{
    PyObject *active = GET(tracing, active);
    PyObject *next = active == NULL ? NULL : GET_AT(tracing, next_check, SL_tracing_next_check);
    if (next == NULL) {
        Py_XDECREF(active);
        return -1;
    }
    int traced = truthy(active);
    static Read next_read;
    long long next_check = read_of(next, &next_read);
    Py_DECREF(active);
    Py_DECREF(next);
    if (traced < 0 || (next_check == -1 && PyErr_Occurred()))
        return -1;
    PyObject *starts = GET(log, starts);
    if (starts == NULL)
        return -1;
    int logged = truthy(starts);
    Py_DECREF(starts);
    if (logged)
        return logged < 0 ? -1 : 0;
    return traced || t0 >= next_check ? 2 : 1;
}

static PyObject *s_sync_operation, *s_internal, *s_start_span_py, *s_start_py, *s_kind, *s_due,
    *s_start, *s_ctx_token_attr, *s_own_ns_attr;

static PyObject *decide_span(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
static PyObject *raised(void);
static PyObject *INVALID_SPAN, *INVALID_PARENT; /* trace.INVALID_SPAN, its context */
static PyObject *s_standard, *s_get_context, *s_decide_name, *s_span_failed,
    *s_current_span_name;

/* _start_span's first step for a standard sampler (Tracing.standard), while _lifecycle's
 * decide_span is the compiled one: the decision made here, on the parent _start_span reads
 * (`current`'s, or that of _lifecycle's current_span()). 1: the span dropped (its decision
 * made current there), or the decision failed and was counted as _start_span counts it;
 * 0: *decided is (parent, decision) for _start_span, or NULL (it decides itself, from the
 * start); -1 with an error (strict mode raised, or one no `except Exception` catches) */
static int
decide_here(PyObject *rt, PyObject *tracing, PyObject *op, PyObject *attributes,
            PyObject *current, PyObject **decided)
{
    *decided = NULL;
    PyObject *fn = named(s_decide_name);
    if (fn == NULL || !PyCFunction_Check(fn) ||
        PyCFunction_GET_FUNCTION(fn) != (PyCFunction)(void (*)(void))decide_span) {
        PyErr_Clear();
        return 0;
    }
    PyObject *standard = PyObject_GetAttr(tracing, s_standard), *parent = NULL, *r = NULL;
    if (standard != NULL && PyTuple_CheckExact(standard) && PyTuple_GET_SIZE(standard) > 0) {
        PyObject *span = Py_XNewRef(current); /* None: the current span (current_span()) */
        if (current == Py_None) {
            PyObject *read = named(s_current_span_name);
            Py_SETREF(span, read == NULL ? NULL : PyObject_CallNoArgs(read));
        }
        parent = span == NULL              ? NULL
                 : span == INVALID_SPAN ? Py_NewRef(INVALID_PARENT) /* (its own, read once) */
                                        : PyObject_CallMethodNoArgs(span, s_get_context);
        Py_XDECREF(span);
    }
    if (parent == NULL) { /* _start_span reads them again, and says */
        Py_XDECREF(standard);
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 0;
    }
    PyObject *argv[4] = {standard, op, parent, attributes};
    r = decide_span(NULL, argv, 4);
    Py_DECREF(standard);
    int done = 1;
    if (r == NULL) { /* as _start_span's except: counted (strict mode raises) */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            done = -1;
        } else {
            PyObject *error = raised();
            PyObject *said = PyObject_CallMethodObjArgs(rt, s_internal_error_name,
                                                        s_span_failed, error, NULL);
            Py_DECREF(error);
            done = said == NULL ? -1 : 1;
            Py_XDECREF(said);
        }
    } else if (r != Py_False) {
        *decided = PyTuple_Pack(2, parent, r);
        done = *decided == NULL ? -1 : 0;
    }
    Py_DECREF(parent);
    Py_XDECREF(r);
    return done;
}

/* start(rt, bound, kind, attributes, now, current): _lifecycle.start in one call, with the
 * names of its namespace (SyncOperation, _INTERNAL, _start_span, _perf); a `now` that is not
 * an exact int fitting 64 bits goes to the Python one (_start_py) whole. */
static PyObject *
start(PyObject *mod, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (CLOCKS == NULL || CURRENT == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "start: setup and operations were not called");
        return NULL;
    }
    long long t0 = nargs > 4 && PyLong_CheckExact(args[4]) ? PyLong_AsLongLong(args[4]) : 0;
    if (nargs < 2 || nargs > 6 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) ||
        (nargs > 4 && !PyLong_CheckExact(args[4])) || t0 == -1) {
        PyErr_Clear(); /* anything but a 64-bit int start time, given by position */
        PyObject *slow = named(s_start_py);
        return slow == NULL ? NULL : PyObject_Vectorcall(slow, args, nargsf, kwnames);
    }
    PyObject *internal = named(s_internal); /* (held: the calls below run Python code) */
    if (internal == NULL)
        return NULL;
    Py_INCREF(internal);
    PyObject *rt = args[0], *bound = args[1], *kind = nargs > 2 ? args[2] : internal;
    PyObject *attributes = nargs > 3 ? args[3] : Py_None, *now = nargs > 4 ? args[4] : ZERO;
    PyObject *current = nargs > 5 ? args[5] : Py_None;
    int given = t0 != 0;
    PyObject *start_ns = NULL, *type = NULL;
    if ((given || now_ns(&t0) == 0) &&
        (start_ns = given ? Py_NewRef(now) : PyLong_FromLongLong(t0)) != NULL)
        type = Py_XNewRef(named(s_sync_operation));
    if (type == NULL) {
        Py_XDECREF(start_ns);
        Py_DECREF(internal);
        return NULL;
    }
    PyObject *argv[8] = {rt, bound, start_ns};
    PyObject *op = PyObject_Vectorcall(type, argv, 3, NULL);
    Py_DECREF(type);
    PyObject *tracing = NULL, *flag = NULL, *inflight = NULL, *log = NULL, *token = NULL;
    if (op == NULL || (kind != internal && PyObject_SetAttr(op, s_kind, kind) < 0) ||
        (tracing = PyObject_GetAttr(rt, s_tracing)) == NULL ||
        (flag = PyObject_GetAttr(tracing, s_active)) == NULL)
        goto failed;
    int traced = truthy(flag);
    if (traced == 0) { /* tracing.active or (t0 >= tracing.next_check and tracing.due(t0)) */
        Py_SETREF(flag, PyObject_GetAttr(tracing, s_next_check));
        traced = flag == NULL ? -1 : PyObject_RichCompareBool(start_ns, flag, Py_GE);
        if (traced > 0) {
            Py_SETREF(flag, PyObject_CallMethodOneArg(tracing, s_due, start_ns));
            traced = flag == NULL ? -1 : truthy(flag);
        }
    }
    if (traced < 0)
        goto failed;
    if (traced) {
        PyObject *decided = NULL; /* (parent, decision) of a standard sampler, made here */
        int dropped = decide_here(rt, tracing, op, attributes, current, &decided);
        if (dropped < 0)
            goto failed;
        if (!dropped) {
            PyObject *span_start = Py_XNewRef(named(s_start_span_py)), *r = NULL;
            argv[0] = rt, argv[1] = op, argv[2] = bound, argv[3] = kind, argv[4] = attributes;
            argv[5] = start_ns, argv[6] = current, argv[7] = decided;
            if (span_start != NULL)
                r = PyObject_Vectorcall(span_start, argv, decided != NULL ? 8 : 7, NULL);
            Py_XDECREF(span_start);
            Py_XDECREF(decided);
            if (r == NULL)
                goto failed;
            Py_DECREF(r);
        }
    }
    if ((inflight = PyObject_GetAttr(bound, s_inflight)) == NULL || count_step(inflight, 1) < 0 ||
        (token = PyContextVar_Set(CURRENT, op)) == NULL ||
        PyObject_SetAttr(op, s_ctx_token_attr, token) < 0 ||
        (log = PyObject_GetAttr(bound, s_log)) == NULL)
        goto failed;
    Py_SETREF(flag, PyObject_GetAttr(log, s_starts));
    int logged = flag == NULL ? -1 : truthy(flag);
    if (logged) {
        PyObject *r = logged < 0 ? NULL : PyObject_CallMethodOneArg(log, s_start, op);
        if (r == NULL)
            goto failed;
        Py_DECREF(r);
    }
    if (!given) { /* its own time: the set-up just done */
        long long t1;
        PyObject *own = now_ns(&t1) < 0 ? NULL : PyLong_FromLongLong(t1 - t0);
        if (own == NULL || PyObject_SetAttr(op, s_own_ns_attr, own) < 0) {
            Py_XDECREF(own);
            goto failed;
        }
        Py_DECREF(own);
    }
    goto done;
failed:
    Py_CLEAR(op);
done:
    Py_DECREF(start_ns);
    Py_DECREF(internal);
    Py_XDECREF(tracing);
    Py_XDECREF(flag);
    Py_XDECREF(inflight);
    Py_XDECREF(log);
    Py_XDECREF(token);
    return op;
}

/* _lifecycle.span_start(rt, op, bound, start): the span start() makes (or the sampler's
 * decision it leaves current), before the operation is current. -1 with an error: what
 * start() raises (strict mode, an interrupt), which the caller raises too. */
static int
span_start(PyObject *rt, Op *op, PyObject *bound, PyObject *start)
{
    PyObject *hook = named(s_span_start);
    if (hook == NULL)
        return -1;
    PyObject *argv[4] = {rt, (PyObject *)op, bound, start};
    PyObject *r = PyObject_Vectorcall(hook, argv, 4, NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* start(): the operation (its span first, when `traced`: *raised is then set if that
 * raised) made current, counted in flight; NULL with an error. */
static Op *
start_op(Fast *self, PyObject *rt, PyObject *bound, const Hints *h, long long t0, int traced,
         int *raised)
{
    PyTypeObject *tp = (PyTypeObject *)self->op_type;
    PyObject *start = PyLong_FromLongLong(t0);
    if (start == NULL)
        return NULL;
    Op *op = (Op *)tp->tp_alloc(tp, 0);
    if (op == NULL || op_init_fields(op, rt, bound, start) < 0 ||
        (traced && (*raised = span_start(rt, op, bound, start) < 0))) {
        Py_XDECREF(op);
        Py_DECREF(start);
        return NULL;
    }
    Py_DECREF(start);
    if (count_step(h->inflight, 1) < 0) {
        Py_DECREF(op);
        return NULL;
    }
    PyObject *token = PyContextVar_Set(CURRENT, (PyObject *)op);
    if (token == NULL) {
        leave_inflight(op, h);
        Py_DECREF(op);
        return NULL;
    }
    Py_SETREF(op->ctx_token, token);
    long long t1;
    if (now_ns(&t1) < 0) { /* started: an Exception is forgotten (its own time read as 0),
                              anything else stays set for the caller to end it with */
        if (PyErr_ExceptionMatches(PyExc_Exception))
            PyErr_Clear();
        return op;
    }
    PyObject *own = PyLong_FromLongLong(t1 - t0);
    if (own != NULL)
        Py_SETREF(op->own_ns, own);
    return op;
}

static PyObject *fast_body(Fast *self, Op *op, const Hints *h, PyObject *args,
                           PyObject *kwargs);

/* After a failure of syncperf's own set-up: an Exception is cleared (1: the Python wrapper
 * takes the call over); anything else (KeyboardInterrupt, SystemExit) stays set (0). */
static int
recoverable(void)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return 0;
    PyErr_Clear();
    return 1;
}

/* What `end` does that must happen whatever failed before it: the operation no longer
 * current here, out of the in-flight count (its measurement is lost). Errors set stay. */
static void
abandon(Op *op)
{
    if (op->ended == Py_True)
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    Py_XSETREF(op->ended, Py_NewRef(Py_True));
    if (op->ctx_token == NULL || !PyContextToken_CheckExact(op->ctx_token) ||
        PyContextVar_Reset(CURRENT, op->ctx_token) < 0) {
        PyErr_Clear();
        if (leave_foreign(op) < 0)
            PyErr_Clear();
    }
    Py_XSETREF(op->ctx_token, Py_NewRef(Py_None));
    if (op->series != NULL && leave_inflight(op, &NO_HINTS) < 0)
        PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

static PyObject *
fast_call(Fast *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "FastPath(args, kwargs)");
        return NULL;
    }
    PyObject *args = argv[0], *kwargs = argv[1];
    if (!PyTuple_Check(args) || (kwargs != Py_None && !PyDict_Check(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "FastPath(args: tuple, kwargs: dict | None)");
        return NULL;
    }
    PyObject *current = NULL;
    if (PyContextVar_Get(CURRENT, NULL, &current) < 0)
        return NULL;
    if (current != NULL && current != Py_None) {
        int ended = PyObject_TypeCheck(current, &OpType)
                        ? (((Op *)current)->ended == Py_True)
                        : -1;
        Py_DECREF(current);
        if (ended != 1) /* joins it (or not ours to judge): the Python wrapper */
            return call_with(self->slow, args, kwargs);
    } else {
        Py_XDECREF(current);
    }
    static Found installed;
    PyObject *rt = item_of(self->runtime, s_installed, &installed);
    if (rt == NULL || rt == Py_None) {
        if (PyErr_Occurred())
            return NULL;
        return call_with(self->slow, args, kwargs); /* configured on first use there */
    }
    Py_INCREF(rt);
    PyObject *bound = bound_for(self, rt);
    if (bound == NULL) {
        Py_DECREF(rt);
        if (!recoverable())
            return NULL;
        return call_with(self->slow, args, kwargs); /* it binds (and counts a failure) */
    }
    if (bound == Py_None) { /* disabled */
        Py_DECREF(rt);
        Py_DECREF(bound);
        return call_with(self->fn, args, kwargs);
    }
    /* this call's own references: another thread may rebind the cache meanwhile */
    Hints h = self->hints;
    PyObject **held[HINTS_N] = HINTS_AT(&h);
    for (int i = 0; i < HINTS_N; i++)
        Py_INCREF(*held[i]);
    PyObject *tracing = Py_NewRef(self->tracing);
    long long t0;
    int plain = now_ns(&t0) < 0 ? -1 : starts_plain(tracing, h.log, t0), raised = 0;
    Py_DECREF(tracing);
    Op *op = plain <= 0 ? NULL : start_op(self, rt, bound, &h, t0, plain == 2, &raised);
    Py_DECREF(rt);
    Py_DECREF(bound);
    if (op == NULL) {
        for (int i = 0; i < HINTS_N; i++)
            Py_DECREF(*held[i]);
        if (raised || (PyErr_Occurred() && !recoverable()))
            return NULL;
        return call_with(self->slow, args, kwargs);
    }
    PyObject *result = fast_body(self, op, &h, args, kwargs);
    for (int i = 0; i < HINTS_N; i++)
        Py_DECREF(*held[i]);
    return result;
}

/* The handler or an extractor phase raised: finish(owner, exc); raise (the same exception,
 * unchanged). Takes the reference to `op`; NULL. */
static PyObject *
fast_raised(Fast *self, Op *op)
{
    if (on_error(self->raised, (PyObject *)op, 0) == -2) /* e.g. at the recursion limit */
        abandon(op);                                       /* never left current */
    Py_DECREF(op);
    return NULL;
}

/* An extractor phase: run(op, args, kwargs, result). -1 with an error set. */
static int
run_phase(PyObject *run, Op *op, PyObject *args, PyObject *kwargs, PyObject *result)
{
    if (Py_IS_TYPE(run, &PhaseType))
        return run_steps((Phase *)run, (PyObject *)op, args, kwargs, result);
    PyObject *kw = kwargs == Py_None ? PyDict_New() : Py_NewRef(kwargs);
    if (kw == NULL)
        return -1;
    PyObject *argv[4] = {(PyObject *)op, args, kw, result};
    PyObject *r = PyObject_Vectorcall(run, argv, 4, NULL);
    Py_DECREF(kw);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The before phase, right after start_op: syncperf's own time so far is all of it since the
 * operation started (start_op's part included). */
static int
fast_before(Fast *self, Op *op, PyObject *args, PyObject *kwargs)
{
    long long start, t;
    if (run_phase(self->before, op, args, kwargs, Py_None) < 0 || now_ns(&t) < 0)
        return -1;
    if (op->start_ns == NULL || !PyLong_CheckExact(op->start_ns) || !read_ll(op->start_ns, &start))
        return PyErr_Occurred() ? -1 : 0; /* changed by the phase: its time goes unmeasured */
    PyObject *own = PyLong_FromLongLong(t - start);
    if (own == NULL)
        return -1;
    Py_SETREF(op->own_ns, own);
    return 0;
}

/* The after phase; `end` measures syncperf's time from its start (resumed_ns). */
static int
fast_after(Fast *self, Op *op, PyObject *args, PyObject *kwargs, PyObject *result)
{
    long long t;
    if (now_ns(&t) < 0 || run_phase(self->after, op, args, kwargs, result) < 0)
        return -1;
    PyObject *resumed = PyLong_FromLongLong(t);
    if (resumed == NULL)
        return -1;
    Py_SETREF(op->resumed_ns, resumed);
    return 0;
}

/* The handler called in its started operation, which ends here. */
static PyObject *
fast_body(Fast *self, Op *op, const Hints *h, PyObject *args, PyObject *kwargs)
{
    /* (an interrupt while it started: ended with it, as if the handler had raised it) */
    if (PyErr_Occurred() || (self->fed && PyObject_SetAttr((PyObject *)op, s_fed, Py_True) < 0))
        return fast_raised(self, op);
    if (self->before != Py_None && fast_before(self, op, args, kwargs) < 0)
        return fast_raised(self, op);
    PyObject *result = call_with(self->fn, args, kwargs);
    if (result == NULL)
        return fast_raised(self, op);
    PyObject *type = (PyObject *)Py_TYPE(result);
    int is_plain = type == self->plain_hit ? 1 : PySet_Contains(self->plain, type);
    if (is_plain == 1) {
        if (type != self->plain_hit)
            Py_SETREF(self->plain_hit, Py_NewRef(type));
    } else { /* maybe a response, an awaitable: the Python helpers */
        if (is_plain < 0)
            PyErr_Clear();
        PyObject *r = PyObject_CallFunctionObjArgs(self->settle, (PyObject *)op, result, args,
                                                   kwargs, self->after, NULL);
        if (r == NULL)
            abandon(op);
        Py_DECREF(op);
        Py_DECREF(result);
        return r;
    }
    if (self->after != Py_None && fast_after(self, op, args, kwargs, result) < 0) {
        Py_DECREF(result);
        return fast_raised(self, op);
    }
    long long clock;
    int ended = end_impl(op, 0, 0, 0, h, &clock);
    PyObject *r = Py_None;
    Py_INCREF(r);
    if (ended == 0) { /* the Python end, from the end time read here */
        Py_DECREF(r);
        PyObject *t = PyLong_FromLongLong(clock);
        r = t == NULL ? NULL : PyObject_CallFunctionObjArgs(self->end, (PyObject *)op, t, NULL);
        Py_XDECREF(t);
    } else if (ended < 0) {
        Py_DECREF(r);
        r = NULL;
        abandon(op); /* if it failed before the operation left the context */
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            if (tb != NULL)
                PyException_SetTraceback(ev, tb);
            r = PyObject_CallFunctionObjArgs(self->failed, (PyObject *)op, ev, NULL);
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
        }
    }
    if (r == NULL)
        abandon(op);
    Py_DECREF(op);
    if (r == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    Py_DECREF(r);
    return result;
}

static PyObject *
fast_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"fn",      "slow",    "bind",  "settle", "raised", "end",
                            "failed",  "runtime", "op_type", "plain", "before", "after",
                            "fed",     NULL};
    PyObject *v[12];
    v[10] = v[11] = Py_None;
    int fed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOO!O!O!|$OOp:FastPath", names, &v[0],
                                     &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &PyDict_Type,
                                     &v[7], &PyType_Type, &v[8], &PyFrozenSet_Type, &v[9], &v[10],
                                     &v[11], &fed))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)v[8], &OpType)) {
        PyErr_SetString(PyExc_TypeError, "op_type: a subclass of Operation");
        return NULL;
    }
    Fast *self = (Fast *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = (vectorcallfunc)fast_call;
    PyObject **slots[] = {&self->fn,      &self->slow,  &self->bind,   &self->settle,
                          &self->raised,  &self->end,   &self->failed, &self->runtime,
                          &self->op_type, &self->plain, &self->before, &self->after};
    for (int i = 0; i < 12; i++)
        *slots[i] = Py_NewRef(v[i]);
    self->fed = fed;
    self->cached_rt = Py_NewRef(Py_None);
    self->cached_bound = Py_NewRef(Py_None);
    self->plain_hit = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static int
fast_traverse(Fast *self, visitproc visit, void *arg)
{
#define VISIT(f) Py_VISIT(self->f);
    FAST_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int
fast_clear(Fast *self)
{
#define CLEAR(f) Py_CLEAR(self->f);
    FAST_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void
fast_dealloc(Fast *self)
{
    PyObject_GC_UnTrack(self);
    fast_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "syncperf._speedups.FastPath",
    .tp_basicsize = sizeof(Fast),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The instrument_sync wrapper of a def handler without extractors.",
    .tp_new = fast_new,
    .tp_traverse = (traverseproc)fast_traverse,
    .tp_clear = (inquiry)fast_clear,
    .tp_dealloc = (destructor)fast_dealloc,
    .tp_vectorcall_offset = offsetof(Fast, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ---- set-up ---------------------------------------------------------------------------- */

/* current_operation(): the operation current in this context, NOOP when none or ended. */
static PyObject *
current_operation(PyObject *mod, PyObject *unused)
{
    PyObject *op;
    if (CURRENT == NULL || NOOP == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "syncperf._speedups.operations() was not called");
        return NULL;
    }
    if (PyContextVar_Get(CURRENT, NULL, &op) < 0)
        return NULL;
    if (op == NULL || op == Py_None) {
        Py_XDECREF(op);
        return Py_NewRef(NOOP);
    }
    PyObject *ended = PyObject_TypeCheck(op, &OpType) && ((Op *)op)->ended != NULL
                          ? Py_NewRef(((Op *)op)->ended)
                          : PyObject_GetAttrString(op, "_ended");
    int done = ended == NULL ? -1 : truthy(ended);
    Py_XDECREF(ended);
    if (done) {
        Py_DECREF(op);
        return done < 0 ? NULL : Py_NewRef(NOOP);
    }
    return op;
}

/* operations(current, noop, record_items): bind what _operation owns: the ContextVar of the
 * current operation, the no-op operation and the Python record_items */
static PyObject *
operations(PyObject *mod, PyObject *args)
{
    PyObject *current, *noop, *items;
    if (!PyArg_ParseTuple(args, "O!OO:operations", &PyContextVar_Type, &current, &noop, &items))
        return NULL;
    Py_XSETREF(CURRENT, Py_NewRef(current));
    Py_XSETREF(NOOP, Py_NewRef(noop));
    Py_XSETREF(ITEMS_SLOW, Py_NewRef(items));
    Py_RETURN_NONE;
}

/* setup(clocks, fold_hook, fold_at, max_queued, pairs_at): `clocks`, the namespace whose
 * `_perf` (time.perf_counter_ns unless a test swaps it) the clock is read from; a fold is
 * due at `fold_at` records queued or `pairs_at` pairs of one FastPath (see _fold) */
static PyObject *
setup(PyObject *mod, PyObject *args)
{
    PyObject *clocks, *hook;
    Py_ssize_t fold_at, max_queued, pairs_at;
    if (!PyArg_ParseTuple(args, "O!Onnn:setup", &PyDict_Type, &clocks, &hook, &fold_at,
                          &max_queued, &pairs_at))
        return NULL;
    PyObject *perf = PyDict_GetItemWithError(clocks, s_perf);
    if (perf == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "setup: the clocks namespace has no _perf");
        return NULL;
    }
    Py_XSETREF(PERF_NS, Py_NewRef(perf));
    Py_XSETREF(CLOCKS, Py_NewRef(clocks));
    Py_XSETREF(FOLD_HOOK, Py_NewRef(hook));
    FOLD_AT = fold_at;
    MAX_QUEUED = max_queued;
    PAIRS_AT = pairs_at;
#if defined(__linux__)
    /* clock_gettime(CLOCK_MONOTONIC) is perf_counter_ns's clock on Linux: checked, not
     * assumed (a reading between two of perf_counter_ns's) */
    use_clock = 0;
    long long a, b, c;
    if (now_ns(&a) < 0)
        return NULL;
    use_clock = 1;
    now_ns(&b);
    use_clock = 0;
    if (now_ns(&c) < 0)
        return NULL;
    use_clock = a <= b && b <= c;
#endif
    return Py_NewRef(use_clock ? Py_True : Py_False);
}

/* Whether a fastcall function `name` got its `want` arguments and its bind (`bound`: what
 * `bind` set) ran; otherwise a TypeError or a RuntimeError is set. */
static int
called(const char *name, Py_ssize_t nargs, Py_ssize_t want, PyObject *bound, const char *bind)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
        return 0;
    }
    if (bound == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s: %s was not called", name, bind);
        return 0;
    }
    return 1;
}

/* ---- a standard sampler's decision, and a dropped span's context (_tracing.sampling) ---- */

/* bind_spans((SpanContext, NonRecordingSpan, DEFAULT_TRACE_STATE, FLAGS),
 *            (context_var, Context, context_api.__dict__, runtime, span_key, attach, detach)):
 * what decide_span builds with and the compiled end detaches with (_tracing.current's
 * variable and functions); context_var None: every attach and detach goes to those */
static PyObject *
bind_spans(PyObject *mod, PyObject *args)
{
    PyObject *ctx, *nonrec, *state, *flags, *var, *ctype, *ns, *runtime, *key, *attach, *detach;
    if (!PyArg_ParseTuple(args, "(O!O!OO!)(OO!O!OOOO):bind_spans", &PyType_Type, &ctx,
                          &PyType_Type, &nonrec, &state, &PyTuple_Type, &flags, &var,
                          &PyType_Type, &ctype, &PyDict_Type, &ns, &runtime, &key, &attach,
                          &detach))
        return NULL;
    if (PyTuple_GET_SIZE(flags) != 4 || !PyType_IsSubtype((PyTypeObject *)ctx, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "bind_spans: four flags and a tuple type expected");
        return NULL;
    }
    if (LIMIT == NULL && (LIMIT = PyLong_FromUnsignedLongLong(~0ULL)) == NULL)
        return NULL;
    Py_XSETREF(SPAN_CONTEXT, Py_NewRef(ctx));
    Py_XSETREF(NON_RECORDING, Py_NewRef(nonrec));
    Py_XSETREF(DEFAULT_STATE, Py_NewRef(state));
    Py_XSETREF(FLAGS, Py_NewRef(flags));
    Py_XSETREF(CONTEXT_VAR, var == Py_None ? NULL : Py_NewRef(var));
    Py_XSETREF(CONTEXT_TYPE, Py_NewRef(ctype));
    Py_XSETREF(CONTEXT_NS, Py_NewRef(ns));
    Py_XSETREF(RUNTIME, Py_NewRef(runtime));
    Py_XSETREF(SPAN_KEY, Py_NewRef(key));
    Py_XSETREF(ATTACH_SLOW, Py_NewRef(attach));
    Py_XSETREF(DETACH_SLOW, Py_NewRef(detach));
    Py_RETURN_NONE;
}

/* getrandbits(bits) or 1 (a new reference) */
static PyObject *
draw(PyObject *getrandbits, int bits)
{
    PyObject *n = PyLong_FromLong(bits);
    PyObject *r = n == NULL ? NULL : PyObject_CallOneArg(getrandbits, n);
    Py_XDECREF(n);
    int truth = r == NULL ? 0 : PyObject_IsTrue(r);
    if (truth == 0 && r != NULL) { /* `or 1` */
        Py_DECREF(r);
        return PyLong_FromLong(1);
    }
    if (truth < 0)
        Py_CLEAR(r);
    return r;
}

/* _tracing.current.attach(span): the token (a new reference) */
static PyObject *
attach_span(PyObject *span)
{
    if (CONTEXT_VAR != NULL) {
        PyObject *in_force = PyDict_GetItemWithError(CONTEXT_NS, s_runtime_context);
        if (in_force == RUNTIME) {
            PyObject *now = NULL;
            if (PyContextVar_Get(CONTEXT_VAR, NULL, &now) < 0)
                return NULL;
            PyObject *values = now != NULL && PyDict_Check(now) ? PyDict_Copy(now) : NULL;
            if (values == NULL) { /* (never: OpenTelemetry's variable holds a Context) */
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_LookupError, "no current context");
                Py_XDECREF(now);
                return NULL;
            }
            Py_DECREF(now);
            PyObject *context = NULL;
            if (PyDict_SetItem(values, SPAN_KEY, span) == 0)
                context = PyObject_CallOneArg(CONTEXT_TYPE, values);
            Py_DECREF(values);
            PyObject *token = context == NULL ? NULL : PyContextVar_Set(CONTEXT_VAR, context);
            Py_XDECREF(context);
            return token;
        }
        if (PyErr_Occurred())
            return NULL;
    }
    return PyObject_CallOneArg(ATTACH_SLOW, span);
}

/* The dropped span: a NonRecordingSpan on (trace_id, span_id, False, flags, state, True),
 * made current for `op` (its _parent_ctx, _span_attrs, _unsampled and _token), as
 * _lifecycle._start_span does with Tracing.unsampled; -1 with an error. */
static int
leave_dropped(PyObject *op, PyObject *parent, PyObject *attributes, PyObject *trace_id,
              PyObject *span_id, PyObject *flags, PyObject *state)
{
    Op *fields = PyObject_TypeCheck(op, &OpType) ? (Op *)op : NULL; /* (else: set by name) */
    if (fields != NULL)
        Py_XSETREF(fields->parent_ctx, Py_NewRef(parent));
    else if (PyObject_SetAttr(op, s_parent_ctx_attr, parent) < 0)
        return -1;
    if (attributes != Py_None && PyDict_GET_SIZE(attributes) > 0) {
        PyObject *copy = PyDict_Copy(attributes);
        int failed = copy == NULL || PyObject_SetAttr(op, s_span_attrs, copy) < 0;
        Py_XDECREF(copy);
        if (failed)
            return -1;
    }
    /* tuple.__new__(SpanContext, fields), as tuple's own __new__ makes a subclass's */
    PyTypeObject *type = (PyTypeObject *)SPAN_CONTEXT;
    PyObject *context = type->tp_alloc(type, 6);
    if (context == NULL)
        return -1;
    PyObject *items[6] = {trace_id, span_id, Py_False, flags, state, Py_True};
    for (int i = 0; i < 6; i++)
        PyTuple_SET_ITEM(context, i, Py_NewRef(items[i]));
    PyObject *span = PyObject_CallOneArg(NON_RECORDING, context);
    Py_DECREF(context);
    if (span == NULL)
        return -1;
    int failed = 0;
    if (fields != NULL)
        Py_XSETREF(fields->unsampled, Py_NewRef(span));
    else
        failed = PyObject_SetAttr(op, s_unsampled_attr, span) < 0;
    PyObject *token = failed ? NULL : attach_span(span);
    Py_DECREF(span);
    if (token != NULL && fields != NULL)
        Py_XSETREF(fields->token, token);
    else {
        failed = token == NULL || PyObject_SetAttr(op, s_token, token) < 0;
        Py_XDECREF(token);
    }
    return failed ? -1 : 0;
}

/* decide_span(standard, op, parent, attributes): Tracing.sample's decision for a standard
 * sampler (`standard`: Tracing.standard, (static, ratio, parent_based, root_unsampled,
 * getrandbits), given while sample_rate is 1 and the ids are random), with the same random
 * draws in the same order. None: not decided here (a parent that is not an exact
 * SpanContext, `attributes` not a dict or None): Tracing.sample decides. False: the sampler
 * dropped it and its decision is current (leave_dropped). Anything else: the sampled
 * decision, as Tracing.sample returns it. */
static PyObject *
decide_span(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("decide_span", nargs, 4, SPAN_CONTEXT, "bind_spans"))
        return NULL;
    PyObject *standard = args[0], *op = args[1], *parent = args[2], *attributes = args[3];
    if (!PyTuple_CheckExact(standard) || PyTuple_GET_SIZE(standard) != 5 ||
        Py_TYPE(parent) != (PyTypeObject *)SPAN_CONTEXT || PyTuple_GET_SIZE(parent) != 6 ||
        (attributes != Py_None && !PyDict_CheckExact(attributes)))
        Py_RETURN_NONE;
    PyObject *fixed = PyTuple_GET_ITEM(standard, 0), *ratio = PyTuple_GET_ITEM(standard, 1);
    PyObject *getrandbits = PyTuple_GET_ITEM(standard, 4);
    int parent_based = PyTuple_GET_ITEM(standard, 2) == Py_True;
    PyObject *valid = PyTuple_GET_ITEM(parent, 5), *flags_of = PyTuple_GET_ITEM(parent, 3);
    if ((valid != Py_True && valid != Py_False) ||
        Py_TYPE(flags_of) != Py_TYPE(PyTuple_GET_ITEM(FLAGS, 0)) ||
        (fixed == Py_None && !PyLong_CheckExact(ratio)))
        Py_RETURN_NONE;
    long parent_flags = PyLong_AsLong(flags_of);
    if (parent_flags == -1 && PyErr_Occurred()) { /* past a long: decided in Python */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *trace_id = NULL; /* the dropped span's, once drawn or taken from the parent */
    if (valid == Py_True && parent_based) {
        if (parent_flags & 1)
            return PyLong_FromLong(1);
    }
    else if (fixed != Py_None) {
        if (fixed == Py_True)
            return Py_NewRef(Py_True);
    }
    else {
        int child = valid == Py_True;
        trace_id = child ? Py_NewRef(PyTuple_GET_ITEM(parent, 0)) : draw(getrandbits, 128);
        PyObject *low = trace_id == NULL ? NULL : PyNumber_And(trace_id, LIMIT);
        int sampled = low == NULL ? -1 : PyObject_RichCompareBool(low, ratio, Py_LT);
        Py_XDECREF(low);
        if (sampled != 0) {
            if (sampled < 0 || child) {
                Py_XDECREF(trace_id);
                return sampled < 0 ? NULL : PyLong_FromLong(1);
            }
            return trace_id;
        }
        if (child) /* _DROPPED: the parent's trace */
            Py_CLEAR(trace_id);
    }
    /* dropped: Tracing.unsampled, the span id drawn first */
    PyObject *span_id = draw(getrandbits, 64), *flags, *state;
    if (span_id == NULL) {
        Py_XDECREF(trace_id);
        return NULL;
    }
    if (valid == Py_True) {
        Py_XSETREF(trace_id, Py_NewRef(PyTuple_GET_ITEM(parent, 0)));
        flags = PyTuple_GET_ITEM(FLAGS, parent_flags & 2);
        state = PyTuple_GET_ITEM(parent, 4);
    }
    else {
        flags = PyTuple_GET_ITEM(standard, 3);
        state = DEFAULT_STATE;
        if (trace_id == NULL && (trace_id = draw(getrandbits, 128)) == NULL) {
            Py_DECREF(span_id);
            return NULL;
        }
    }
    int failed = leave_dropped(op, parent, attributes, trace_id, span_id, flags, state);
    Py_DECREF(trace_id);
    Py_DECREF(span_id);
    return failed ? NULL : Py_NewRef(Py_False);
}

/* ---- what an Exchange reads per request (asgi._read) ------------------------------------ */

/* usable(): whether this interpreter set the module's state up and is the main one. The
 * state is one set of C globals per process (single-phase init): a second interpreter
 * importing syncperf (mod_wsgi's, uWSGI's sub-interpreters) would bind them to its own
 * objects under the first one's feet; every interpreter but the first, main one takes the
 * pure-Python path (_accel). */
static PyObject *
usable(PyObject *mod, PyObject *unused)
{
    PyInterpreterState *here = PyInterpreterState_Get();
    return PyBool_FromLong(here == OWNER && here == PyInterpreterState_Main());
}

static PyObject *HEADERS_SLOW, *SCOPE_SLOW, *REPLAYED_SLOW, *SENDING_SLOW; /* the Python twins */
static PyObject *CLIENT_HEADER, *EVENT_STREAM, *METHODS, *SCHEMES;
static PyObject *s_method, *s_scheme, *s_root_path, *s_replayed, *s_empty, *s_empty_bytes,
    *s_empty_tuple;
static Py_ssize_t MAX_HEADER = -1;

/* bind_read((read_headers_py, read_scope_py, mark_replayed_py, sending_py),
 *           (client_header, max_header, event_stream, methods, schemes)) */
static PyObject *
bind_read(PyObject *mod, PyObject *args)
{
    PyObject *headers, *scope, *replayed, *sending, *client, *stream, *methods, *schemes;
    Py_ssize_t max_header;
    if (!PyArg_ParseTuple(args, "(OOOO)(O!nO!O!O!):bind_read", &headers, &scope, &replayed,
                          &sending, &PyBytes_Type, &client, &max_header, &PyBytes_Type, &stream,
                          &PyFrozenSet_Type, &methods, &PyFrozenSet_Type, &schemes))
        return NULL;
    Py_XSETREF(HEADERS_SLOW, Py_NewRef(headers));
    Py_XSETREF(SCOPE_SLOW, Py_NewRef(scope));
    Py_XSETREF(REPLAYED_SLOW, Py_NewRef(replayed));
    Py_XSETREF(SENDING_SLOW, Py_NewRef(sending));
    Py_XSETREF(CLIENT_HEADER, Py_NewRef(client));
    Py_XSETREF(EVENT_STREAM, Py_NewRef(stream));
    Py_XSETREF(METHODS, Py_NewRef(methods));
    Py_XSETREF(SCHEMES, Py_NewRef(schemes));
    MAX_HEADER = max_header;
    Py_RETURN_NONE;
}

/* the two items of a pair (an exact tuple or list of two), borrowed; 0: not one */
static inline int
pair_of(PyObject *item, PyObject **a, PyObject **b)
{
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
        *a = PyTuple_GET_ITEM(item, 0);
        *b = PyTuple_GET_ITEM(item, 1);
        return 1;
    }
    if (PyList_CheckExact(item) && PyList_GET_SIZE(item) == 2) {
        *a = PyList_GET_ITEM(item, 0);
        *b = PyList_GET_ITEM(item, 1);
        return 1;
    }
    return 0;
}

/* item i of an exact list or tuple (borrowed), NULL past its end (a list is read again each
 * time, as Python's iterator does) */
static inline PyObject *
nth(PyObject *seq, int is_list, Py_ssize_t i)
{
    if (is_list)
        return i < PyList_GET_SIZE(seq) ? PyList_GET_ITEM(seq, i) : NULL;
    return i < PyTuple_GET_SIZE(seq) ? PyTuple_GET_ITEM(seq, i) : NULL;
}

static inline int
bytes_is(PyObject *b, const char *s, Py_ssize_t n)
{
    return PyBytes_GET_SIZE(b) == n && memcmp(PyBytes_AS_STRING(b), s, (size_t)n) == 0;
}

static inline int
bytes_eq(PyObject *a, PyObject *b)
{
    return a == b || bytes_is(a, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

/* `needle in hay` for bytes (hay non-empty or not): memmem where there is one */
static int
bytes_in(PyObject *needle, PyObject *hay)
{
    Py_ssize_t n = PyBytes_GET_SIZE(needle), h = PyBytes_GET_SIZE(hay);
    const char *s = PyBytes_AS_STRING(hay), *t = PyBytes_AS_STRING(needle);
    if (n == 0)
        return 1;
    for (Py_ssize_t i = 0; i + n <= h; i++)
        if (s[i] == t[0] && memcmp(s + i, t, (size_t)n) == 0)
            return 1;
    return 0;
}

/* whether b, its ASCII whitespace stripped (bytes.strip()), is s (n bytes, lower case) in
 * any ASCII case; `strip`: 0 reads b whole (bytes.lower() == s) */
static int
bytes_ieq(PyObject *b, const char *s, Py_ssize_t n, int strip)
{
    const char *p = PyBytes_AS_STRING(b), *end = p + PyBytes_GET_SIZE(b);
    if (strip) {
        while (p < end && Py_ISSPACE(*p))
            p++;
        while (end > p && Py_ISSPACE(end[-1]))
            end--;
    }
    if (end - p != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (Py_TOLOWER(p[i]) != s[i])
            return 0;
    return 1;
}

/* read_headers(headers, idem_name, fields): read_headers_py for a list or tuple of pairs
 * (tuples or lists of two) of exact bytes, idem_name exact bytes and fields an exact set or
 * frozenset; any other input goes to read_headers_py whole, from its start (nothing read
 * here has an effect: the same answer). */
static PyObject *
read_headers(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("read_headers", nargs, 3, HEADERS_SLOW, "bind_read"))
        return NULL;
    PyObject *headers = args[0], *idem = args[1], *fields = args[2];
    long long length = -1;
    PyObject *key = NULL, *client = NULL; /* strong references */
    Py_ssize_t client_size = 0;
    int propagated = 0, stream = 0, encoded = 0, continues = 0;
    int is_list = PyList_CheckExact(headers);
    if ((!is_list && !PyTuple_CheckExact(headers)) || !PyBytes_CheckExact(idem) ||
        !PyAnySet_CheckExact(fields))
        goto slow;
    PyObject *item;
    for (Py_ssize_t i = 0; (item = nth(headers, is_list, i)) != NULL; i++) {
        PyObject *name, *value;
        if (!pair_of(item, &name, &value) || !PyBytes_CheckExact(name) ||
            !PyBytes_CheckExact(value))
            goto slow;
        if (bytes_is(name, "content-length", 14)) {
            Py_ssize_t n = PyBytes_GET_SIZE(value);
            const char *s = PyBytes_AS_STRING(value);
            long long v = n >= 1 && n <= 15 ? 0 : -1; /* isdigit() and len(value) <= 15 */
            for (Py_ssize_t j = 0; j < n && v >= 0; j++)
                v = (s[j] >= '0' && s[j] <= '9') ? v * 10 + (s[j] - '0') : -1;
            length = v;
        }
        else if (bytes_eq(name, idem)) {
            Py_XSETREF(key, Py_NewRef(value));
        }
        else if (bytes_eq(name, CLIENT_HEADER)) {
            if (client == NULL) {
                if ((client = PyList_New(1)) == NULL)
                    goto error;
                PyList_SET_ITEM(client, 0, Py_NewRef(value));
                client_size = PyBytes_GET_SIZE(value);
            }
            else if (client_size <= MAX_HEADER) {
                if (PyList_Append(client, value) < 0)
                    goto error;
                client_size += 1 + PyBytes_GET_SIZE(value);
            }
        }
        else if (bytes_is(name, "accept", 6)) {
            stream = stream || bytes_in(EVENT_STREAM, value);
        }
        else {
            if (bytes_is(name, "content-encoding", 16))
                encoded = encoded || !(bytes_ieq(value, "", 0, 1) ||
                                       bytes_ieq(value, "identity", 8, 1));
            else if (bytes_is(name, "expect", 6))
                continues = continues || bytes_ieq(value, "100-continue", 12, 0);
            /* fields holds bytes (a propagator's header names), compared in C; one holding
             * anything else could run Python code: the item is held meanwhile */
            Py_INCREF(item);
            int found = PySet_Contains(fields, name);
            Py_DECREF(item);
            if (found < 0)
                goto error;
            propagated = propagated || found;
        }
    }
    PyObject *r = PyTuple_New(7);
    PyObject *n = PyLong_FromLongLong(length);
    if (r == NULL || n == NULL) {
        Py_XDECREF(r);
        Py_XDECREF(n);
        goto error;
    }
    PyTuple_SET_ITEM(r, 0, n);
    PyTuple_SET_ITEM(r, 1, key == NULL ? Py_NewRef(Py_None) : key);
    PyTuple_SET_ITEM(r, 2, client == NULL ? Py_NewRef(Py_None) : client);
    PyTuple_SET_ITEM(r, 3, Py_NewRef(propagated ? Py_True : Py_False));
    PyTuple_SET_ITEM(r, 4, Py_NewRef(stream ? Py_True : Py_False));
    PyTuple_SET_ITEM(r, 5, Py_NewRef(encoded ? Py_True : Py_False));
    PyTuple_SET_ITEM(r, 6, Py_NewRef(continues ? Py_True : Py_False));
    return r;
slow:
    Py_XDECREF(key);
    Py_XDECREF(client);
    return PyObject_Vectorcall(HEADERS_SLOW, args, 3, NULL);
error:
    Py_XDECREF(key);
    Py_XDECREF(client);
    return NULL;
}

/* read_scope(scope): read_scope_py for an exact dict (its values read in the same order,
 * held while the next is looked up); any other scope goes to read_scope_py */
static PyObject *
read_scope(PyObject *mod, PyObject *scope)
{
    if (SCOPE_SLOW == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "read_scope: bind_read was not called");
        return NULL;
    }
    if (!PyDict_CheckExact(scope))
        return PyObject_CallOneArg(SCOPE_SLOW, scope);
    PyObject *method = NULL, *scheme = NULL, *root = NULL, *r = NULL;
    if ((method = Py_XNewRef(PyDict_GetItemWithError(scope, s_method))) == NULL &&
        PyErr_Occurred())
        goto done;
    if ((scheme = Py_XNewRef(PyDict_GetItemWithError(scope, s_scheme))) == NULL &&
        PyErr_Occurred())
        goto done;
    if ((root = Py_XNewRef(PyDict_GetItemWithError(scope, s_root_path))) == NULL) {
        if (PyErr_Occurred())
            goto done;
        root = Py_NewRef(s_empty);
    }
    int known = 0;
    if (method != NULL && PyUnicode_CheckExact(method) && scheme != NULL &&
        PyUnicode_CheckExact(scheme) && PyUnicode_CheckExact(root)) {
        if ((known = PySet_Contains(METHODS, method)) < 0 ||
            (known && (known = PySet_Contains(SCHEMES, scheme)) < 0))
            goto done;
    }
    r = known ? PyTuple_Pack(3, method, scheme, root) : Py_NewRef(Py_None);
done:
    Py_XDECREF(method);
    Py_XDECREF(scheme);
    Py_XDECREF(root);
    return r;
}

/* a.lower() == b for bytes (bytes.lower(): ASCII letters only) */
static inline int
lower_is(PyObject *a, const char *b, Py_ssize_t n)
{
    if (PyBytes_GET_SIZE(a) != n)
        return 0;
    const char *s = PyBytes_AS_STRING(a);
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if ((c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c) != b[i])
            return 0;
    }
    return 1;
}

/* mark_replayed(ex, headers, name): mark_replayed_py for an exact list or tuple of pairs of
 * exact bytes and an exact bytes name; anything else goes to mark_replayed_py whole (nothing
 * is set here before a header that is not a pair of bytes: the same effect) */
static PyObject *
mark_replayed(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("mark_replayed", nargs, 3, REPLAYED_SLOW, "bind_read"))
        return NULL;
    PyObject *ex = args[0], *headers = args[1], *name = args[2], *item;
    int is_list = PyList_CheckExact(headers);
    if ((!is_list && !PyTuple_CheckExact(headers)) || !PyBytes_CheckExact(name))
        return PyObject_Vectorcall(REPLAYED_SLOW, args, 3, NULL);
    /* checked whole first: a pair that is not one raises in Python, after the marks before
     * it; here nothing is marked before the list is known to be pairs of bytes */
    for (Py_ssize_t i = 0; (item = nth(headers, is_list, i)) != NULL; i++) {
        PyObject *key, *value;
        if (!pair_of(item, &key, &value) || !PyBytes_CheckExact(key) ||
            !PyBytes_CheckExact(value))
            return PyObject_Vectorcall(REPLAYED_SLOW, args, 3, NULL);
    }
    const char *want = PyBytes_AS_STRING(name);
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    for (Py_ssize_t i = 0; (item = nth(headers, is_list, i)) != NULL; i++) {
        PyObject *key, *value;
        if (!pair_of(item, &key, &value) || !PyBytes_CheckExact(key) ||
            !PyBytes_CheckExact(value))
            return PyObject_Vectorcall(REPLAYED_SLOW, args, 3, NULL); /* changed meanwhile */
        if (lower_is(key, want, n) && (lower_is(value, "true", 4) || lower_is(value, "1", 1))) {
            Py_INCREF(item);
            int failed = PyObject_SetAttr(ex, s_replayed, Py_True);
            Py_DECREF(item);
            if (failed < 0)
                return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *s_type, *s_body, *s_more_body, *s_status, *s_headers, *s_sent, *s_chunks,
    *s_max_body, *s_op_attr, *s_mw, *s_replay_name, *s_owner_span, *s_body_kind, *s_start_kind;

/* getattr(obj, name) when it is an exact int (a new reference); NULL without an error: not
 * one */
static PyObject *
int_attr(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v != NULL && !PyLong_CheckExact(v))
        Py_CLEAR(v);
    return v;
}

/* message[key] of an exact dict, or `absent` when missing (a new reference); NULL with an
 * error */
static PyObject *
get_or(PyObject *message, PyObject *key, PyObject *absent)
{
    PyObject *v = PyDict_GetItemWithError(message, key);
    return Py_XNewRef(v != NULL || PyErr_Occurred() ? v : absent);
}

/* sending(ex, message): sending_py for the messages servers are sent: an exact dict whose
 * `type` is a body (exact bytes, `more_body` a bool or None, an int `sent`, no chunks or a
 * list and an int cap) or a start (a status an exact int from 100 to 599, no chunks, no
 * span of another instrumentation's to name the entity on); any other message, or a field
 * that cannot be read, goes to sending_py whole, before anything is set here. What it
 * holds it holds strong references to: reading a field may run code. */
static PyObject *
sending(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("sending", nargs, 2, SENDING_SLOW, "bind_read"))
        return NULL;
    PyObject *ex = args[0], *message = args[1], *r = NULL, *kind = NULL, *body = NULL;
    PyObject *more = NULL, *status = NULL, *headers = NULL, *sent = NULL, *chunks = NULL;
    PyObject *mw = NULL, *cap = NULL, *op = NULL, *name = NULL, *owner = NULL;
    if (!PyDict_CheckExact(message))
        goto slow;
    if ((kind = get_or(message, s_type, NULL)) == NULL)
        goto slow_or_error;
    if (!PyUnicode_CheckExact(kind))
        goto slow;
    int body_kind = PyUnicode_Compare(kind, s_body_kind) == 0;
    if (!body_kind && PyUnicode_Compare(kind, s_start_kind) != 0)
        goto slow;
    if (body_kind) {
        if ((body = get_or(message, s_body, s_empty_bytes)) == NULL ||
            (more = get_or(message, s_more_body, Py_False)) == NULL)
            goto slow_or_error;
        if (!PyBytes_CheckExact(body) ||
            (more != Py_True && more != Py_False && more != Py_None))
            goto slow;
        if ((sent = int_attr(ex, s_sent)) == NULL ||
            (chunks = PyObject_GetAttr(ex, s_chunks)) == NULL)
            goto unread;
        if (chunks != Py_None) {
            if (!PyList_CheckExact(chunks))
                goto slow;
            if ((mw = PyObject_GetAttr(ex, s_mw)) == NULL ||
                (cap = int_attr(mw, s_max_body)) == NULL)
                goto unread;
        }
        PyObject *size = PyLong_FromSsize_t(PyBytes_GET_SIZE(body));
        PyObject *total = size == NULL ? NULL : PyNumber_Add(sent, size);
        Py_XDECREF(size);
        int keep = 0;
        if (total == NULL || PyObject_SetAttr(ex, s_sent, total) < 0 ||
            (cap != NULL && (keep = PyObject_RichCompareBool(total, cap, Py_LE)) < 0) ||
            (keep && PyList_Append(chunks, body) < 0)) {
            Py_XDECREF(total);
            goto done;
        }
        Py_DECREF(total);
        r = Py_NewRef(more == Py_True ? Py_False : Py_True);
        goto done;
    }
    if ((status = get_or(message, s_status, Py_None)) == NULL)
        goto slow_or_error;
    long code = PyLong_CheckExact(status) ? PyLong_AsLong(status) : 0;
    if (code == -1 && PyErr_Occurred())
        PyErr_Clear(); /* past a long: not a status */
    if (code < 100 || code > 599)
        goto slow;
    if ((chunks = PyObject_GetAttr(ex, s_chunks)) == NULL ||
        (op = PyObject_GetAttr(ex, s_op_attr)) == NULL)
        goto unread;
    if (chunks != Py_None)
        goto slow;
    if (op != Py_None) {
        if ((owner = PyObject_GetAttr(ex, s_owner_span)) == NULL ||
            (mw = PyObject_GetAttr(ex, s_mw)) == NULL ||
            (name = PyObject_GetAttr(mw, s_replay_name)) == NULL)
            goto unread;
        if (owner != Py_None)
            goto slow;
    }
    if (PyObject_SetAttr(ex, s_status, status) < 0)
        goto done;
    if (name != NULL && name != Py_None) { /* mark_replayed(ex, headers or (), name) */
        if ((headers = get_or(message, s_headers, Py_None)) == NULL)
            goto done;
        int given = headers == Py_None ? 0 : PyObject_IsTrue(headers);
        if (given < 0)
            goto done;
        PyObject *argv[3] = {ex, given ? headers : s_empty_tuple, name};
        PyObject *marked = mark_replayed(mod, argv, 3);
        if (marked == NULL)
            goto done;
        Py_DECREF(marked);
    }
    r = Py_NewRef(Py_False);
    goto done;
unread: /* a field not read (or not an int): the Python twin reads it too, after its writes */
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            goto done;
        PyErr_Clear();
    }
    goto slow;
slow_or_error:
    if (PyErr_Occurred())
        goto done;
slow:
    r = PyObject_Vectorcall(SENDING_SLOW, args, 2, NULL);
done:
    Py_XDECREF(kind);
    Py_XDECREF(body);
    Py_XDECREF(more);
    Py_XDECREF(status);
    Py_XDECREF(headers);
    Py_XDECREF(sent);
    Py_XDECREF(chunks);
    Py_XDECREF(mw);
    Py_XDECREF(cap);
    Py_XDECREF(op);
    Py_XDECREF(name);
    Py_XDECREF(owner);
    return r;
}

/* ns[key] (borrowed) for a bind function, or NULL with an error naming it */
static PyObject *
bound_item(PyObject *ns, PyObject *key, const char *bind)
{
    PyObject *found = PyDict_GetItemWithError(ns, key);
    if (found == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_TypeError, "%s: no %U", bind, key);
    return found;
}

/* ---- a Python namespace a compiled twin calls into (asgi) ---------------------------- */

/* The functions of one module's namespace a compiled twin calls, or skips calling: bound
 * once, compared per call (a dict version check on 3.11). One rebound since (a test's
 * monkeypatch) sends the call to the Python twin, which calls what is there now. */
#define WATCH_MAX 16
typedef struct {
    int n;
    const char *const *names;
    PyObject *ns, *str[WATCH_MAX], *orig[WATCH_MAX];
    Found found[WATCH_MAX];
} Watch;

/* Bind `w` to namespace `ns` as it is now (0; -1 with an error naming `bind`) */
static int
watch_bind(Watch *w, PyObject *ns, const char *bind)
{
    for (int i = 0; i < w->n; i++) {
        if (w->str[i] == NULL && (w->str[i] = PyUnicode_InternFromString(w->names[i])) == NULL)
            return -1;
        PyObject *f = bound_item(ns, w->str[i], bind);
        if (f == NULL)
            return -1;
        Py_XSETREF(w->orig[i], Py_NewRef(f));
    }
    Py_XSETREF(w->ns, Py_NewRef(ns));
    return 0;
}

/* 1: every name still holds what was bound; 0: one was rebound; -1: an error */
static int
watch_same(Watch *w)
{
    for (int i = 0; i < w->n; i++) {
        PyObject *f = item_of(w->ns, w->str[i], &w->found[i]);
        if (f != w->orig[i])
            return f == NULL && PyErr_Occurred() ? -1 : 0;
    }
    return 1;
}

/* ---- the end of a request (asgi._finish) ---------------------------------------------- */

/* What finish reads and compares: the names of _finish's namespace it calls (a test or a
 * configure() race patches one: then finish_py runs whole), the Exchange's fields. */
enum { W_finish_operation, W_record_http, W_framework_route, W_end, W_http_key, W_settle,
       W_apply_http_status, W_hook_failed, W_span_outcome, W_perf, W_N };
static const char *const W_NAMES[W_N] = {"finish_operation", "record_http", "framework_route",
                                         "end", "http_key", "settle", "apply_http_status",
                                         "hook_failed", "span_outcome", "_perf"};
static Watch FINISH_W = {.n = W_N, .names = W_NAMES};
enum { X_rt, X_left_early, X_complete_ns, X_token, X_status, X_op, X_adapter, X_replayed,
       X_held_entity, X_scope, X_entry_root, X_http, X_live, X_t0, X_received,
       X_content_length, X_method, X_scheme, X_sent, X_prologue_ns, X_active, X_template,
       X_N, /* finish reads the fields above; new_exchange sets these too */
       X_answer_encoded = X_N, X_continues, X_current, X_disconnected, X_encoded, X_idem_key,
       X_metered_into, X_mw, X_owned, X_owner_span, X_read_ahead, X_response_chunks, X_shared,
       X_ALL };
static const char *X_NAMES[X_ALL] = {
    "rt", "left_early", "complete_ns", "token", "status", "op", "adapter", "replayed",
    "held_entity", "scope", "entry_root", "http", "live", "t0", "received", "content_length",
    "method", "scheme", "sent", "prologue_ns", "active", "template", "answer_encoded",
    "continues", "current", "disconnected", "encoded", "idem_key", "metered_into", "mw",
    "owned", "owner_span", "read_ahead", "response_chunks", "shared"};
static PyObject *X_STR[X_ALL], *FINISH_SLOW, *VERSIONS,
    *END_PLAIN_FN;
static PyObject *s_end_plain, *s_overhead_series, *s_asgi, *s_lock, *s_acquire, *s_release,
    *s_series_attr, *s_values, *s_fold_now, *s_scratch, *s_http_version, *s_head,
    *s_end_failed, *s_http_failed, *s_route_key, *s_root_path_key, *s_fastapi, *s_app_root,
    *s_path_format, *s_outcome_failed;
static Found END_PLAIN_FOUND;
static Slot X_SLOT[X_ALL];
static Py_ssize_t BATCH_FOLD_AT = -1;

/* bind_finish(namespace, finish_py, versions, fold_at): _finish's namespace as it is now (its
 * functions are the ones finish may skip calling), the Python twin, the HTTP versions kept and
 * the batch size that folds (_metrics.batches.FOLD_AT) */
static PyObject *
bind_finish(PyObject *mod, PyObject *args)
{
    PyObject *ns, *slow, *versions;
    Py_ssize_t fold_at;
    if (!PyArg_ParseTuple(args, "O!OO!n:bind_finish", &PyDict_Type, &ns, &slow,
                          &PyFrozenSet_Type, &versions, &fold_at))
        return NULL;
    if (CLOCKS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_finish: setup was not called");
        return NULL;
    }
#define FINISH_INTERN(var, text)                                                             \
    if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL)                     \
        return NULL;
    for (int i = 0; i < X_ALL; i++)
        FINISH_INTERN(X_STR[i], X_NAMES[i])
    FINISH_INTERN(s_end_plain, "_end_plain") FINISH_INTERN(s_overhead_series, "overhead_series")
    FINISH_INTERN(s_asgi, "asgi") FINISH_INTERN(s_lock, "lock")
    FINISH_INTERN(s_acquire, "acquire") FINISH_INTERN(s_release, "release")
    FINISH_INTERN(s_series_attr, "series") FINISH_INTERN(s_values, "values")
    FINISH_INTERN(s_fold_now, "fold_now") FINISH_INTERN(s_scratch, "scratch")
    FINISH_INTERN(s_http_version, "http_version") FINISH_INTERN(s_head, "HEAD")
    FINISH_INTERN(s_end_failed, "operation_end_failed")
    FINISH_INTERN(s_http_failed, "asgi_http_metrics_failed")
    FINISH_INTERN(s_route_key, "route") FINISH_INTERN(s_root_path_key, "root_path")
    FINISH_INTERN(s_fastapi, "fastapi") FINISH_INTERN(s_app_root, "app_root_path")
    FINISH_INTERN(s_path_format, "path_format")
    FINISH_INTERN(s_outcome_failed, "asgi_outcome_failed")
#undef FINISH_INTERN
    if (watch_bind(&FINISH_W, ns, "bind_finish") < 0)
        return NULL;
    PyObject *plain = PyDict_GetItemWithError(CLOCKS, s_end_plain);
    if (plain == NULL && PyErr_Occurred())
        return NULL;
    Py_XSETREF(END_PLAIN_FN, Py_XNewRef(plain));
    Py_XSETREF(FINISH_SLOW, Py_NewRef(slow));
    Py_XSETREF(VERSIONS, Py_NewRef(versions));
    BATCH_FOLD_AT = fold_at;
    Py_RETURN_NONE;
}

/* Whether every function finish would skip is still the one bound, and both clocks are
 * perf_counter_ns (0: finish_py runs; -1: an error) */
static int
unpatched(void)
{
    int same = watch_same(&FINISH_W);
    if (same <= 0)
        return same;
    PyObject *plain = item_of(CLOCKS, s_end_plain, &END_PLAIN_FOUND);
    if (plain == NULL && PyErr_Occurred())
        return -1;
    if (plain != END_PLAIN_FN || END_PLAIN_FN == NULL || FINISH_W.orig[W_perf] != PERF_NS)
        return 0;
    static Found perf_found;
    PyObject *perf = item_of(CLOCKS, s_perf, &perf_found);
    if (perf == NULL && PyErr_Occurred())
        return -1;
    return perf == PERF_NS;
}

/* The error set, as an exception object with its traceback (a new reference) */
static PyObject *
raised(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* hook_failed(rt, reason, <the error set>, None) for an Exception (0, or -1 with what it
 * raised: strict mode); any other error stays set (-1) */
static int
hook_failed(PyObject *rt, PyObject *reason)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *error = raised();
    PyObject *argv[4] = {rt, reason, error, Py_None};
    PyObject *r = PyObject_Vectorcall(FINISH_W.orig[W_hook_failed], argv, 4, NULL);
    Py_DECREF(error);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* An exact int field read as a long long within 2**61 (0: it is not one; Python's big ints
 * take the others) */
static inline int
ll_field(PyObject *o, long long *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    if (read_ll(o, out))
        return *out >= -(1LL << 61) && *out <= (1LL << 61);
    PyErr_Clear();
    return 0;
}

/* The error set, kept for the end (a later one replaces it, as in a `finally`) */
static void
keep(PyObject **pending)
{
    Py_XSETREF(*pending, raised());
}

/* framework_route(scope, entry_root) (a new reference): the matched route's template, read
 * here for a route Starlette or FastAPI left without an included router's context, at the
 * server's root; any other scope goes to the Python one */
static PyObject *
route_of(PyObject *scope, PyObject *entry_root)
{
    PyObject *route = PyDict_GetItemWithError(scope, s_route_key), *root = NULL;
    int plain = route != NULL && PyDict_GetItemWithError(scope, s_fastapi) == NULL &&
                !PyErr_Occurred() && (root = PyDict_GetItemWithError(scope, s_root_path_key)) &&
                PyUnicode_CheckExact(root) && PyUnicode_CheckExact(entry_root) &&
                PyUnicode_Compare(root, entry_root) == 0 &&
                PyDict_GetItemWithError(scope, s_app_root) == NULL && !PyErr_Occurred();
    if (!plain) {
        if (PyErr_Occurred())
            return NULL;
        PyObject *argv[2] = {scope, entry_root};
        return PyObject_Vectorcall(FINISH_W.orig[W_framework_route], argv, 2, NULL);
    }
    Py_INCREF(route);
    PyObject *template = PyObject_GetAttr(route, s_path_format); /* (may run code) */
    Py_DECREF(route);
    if (template == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!PyUnicode_Check(template))
        Py_SETREF(template, Py_NewRef(Py_None));
    return template;
}

/* After a lookup that failed: 0, an Exception dropped (the Python twin it hands over to
 * meets it again); -1, anything else (a KeyboardInterrupt...) left set */
static int
dropped_exception(void)
{
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 0;
}

/* record_http's `finally`: `if ex.active: ex.active.pop()` (its own errors dropped) */
static void
leave_active(PyObject *active)
{
    int busy = active == Py_None ? 0 : PyObject_IsTrue(active);
    PyObject *popped = busy > 0 ? PyObject_CallMethodObjArgs(active, s_pop, NULL) : NULL;
    Py_XDECREF(popped);
    if (busy < 0 || (busy > 0 && popped == NULL))
        PyErr_Clear();
}

/* record_http's try block for a request whose series is bound: 1 recorded, 0 not begun
 * (record_http does it all), -1 with an error set after the request began to be recorded
 * (record_http's except: hook_failed), -2 with an error no `except Exception` catches */
static int
record_c(PyObject **x, PyObject *matched, long long t_end, long long complete, long long t0,
         long long received, long long clen, long long sent, long long prologue)
{
    PyObject *rt = x[X_rt], *http = x[X_http], *scope = x[X_scope];
    PyObject *overheads = NULL, *route_given = NULL, *key = NULL, *series = NULL;
    PyObject *batch = NULL, *values = NULL, *entry = NULL, *lock = NULL, *successor = NULL;
    int r = 0;
    if ((overheads = PyObject_GetAttr(rt, s_overhead_series)) == NULL ||
        !PyDict_CheckExact(overheads))
        goto out;
    PyObject *overhead = PyDict_GetItemWithError(overheads, s_asgi);
    if (overhead == NULL || PyObject_IsTrue(overhead) != 1) /* (a series: true) */
        goto out;
    if (x[X_op] == Py_None) { /* http_key reads the route the framework matched */
        if ((route_given = route_of(scope, x[X_entry_root])) == NULL)
            goto out;
        matched = route_given;
    }
    /* (first: a str subclass's truth may run code; the version is read borrowed after it) */
    int given = matched == NULL || matched == Py_None ? 0 : PyObject_IsTrue(matched);
    if (given < 0)
        goto out;
    PyObject *version = PyDict_GetItemWithError(scope, s_http_version);
    if (version == NULL) {
        if (PyErr_Occurred())
            goto out;
        version = Py_None;
    } else if (PyUnicode_CheckExact(version)) {
        int known = PySet_Contains(VERSIONS, version);
        if (known < 0)
            goto out;
        version = known ? version : Py_None;
    } else if (version != Py_None) {
        goto out; /* wrong_type counts it */
    }
    key = PyTuple_Pack(6, x[X_method], x[X_scheme], x[X_status], given ? matched : x[X_template],
                       Py_None, version);
    if (key == NULL || (series = PyObject_GetAttr(http, s_series_attr)) == NULL ||
        !PyDict_CheckExact(series))
        goto out;
    if ((batch = PyDict_GetItemWithError(series, key)) == NULL)
        goto out;
    Py_INCREF(batch);
    if ((values = PyObject_GetAttr(batch, s_values)) == NULL || !PyList_CheckExact(values))
        goto out;
    int head = PyUnicode_Compare(x[X_method], s_head) == 0;
    if ((lock = PyObject_GetAttr(rt, s_lock)) == NULL)
        goto out;
    PyObject *acquired = PyObject_CallMethodNoArgs(lock, s_acquire);
    if (acquired == NULL)
        goto out;
    Py_DECREF(acquired);
    r = -1; /* from here on, as record_http's except does */
    int done = 0, left = 0;
    if ((successor = PyObject_GetAttr(rt, s_successor)) != NULL && successor == Py_None) {
        PyObject *active = x[X_active];
        int busy = active == Py_None ? 0 : PyObject_IsTrue(active);
        PyObject *popped = busy > 0 ? PyObject_CallMethodObjArgs(active, s_pop, NULL) : NULL;
        Py_XDECREF(popped);
        left = busy == 0 || popped != NULL;
        long long now; /* (syncperf's own time: up to now, under the lock) */
        if (left && now_ns(&now) == 0 &&
            (entry = Py_BuildValue("(LLLL)", x[X_live] == Py_True ? -1LL : complete - t0,
                                   received > 0 || clen == 0 ? received : -1LL,
                                   head ? 0LL : sent, prologue + now - t_end)) != NULL) {
            Py_ssize_t n = PyList_GET_SIZE(values);
            done = PyList_SetSlice(values, n, n, entry) == 0;
        }
    }
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *released = PyObject_CallMethodNoArgs(lock, s_release);
    if (released == NULL) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        goto out;
    }
    Py_DECREF(released);
    PyErr_Restore(et, ev, tb);
    if (successor != NULL && successor != Py_None) { /* configure() replaced the runtime */
        r = 0; /* record_http hands the request over */
        goto out;
    }
    if (!done) { /* (the error set) record_http's `finally`: the request leaves the gauge */
        if (!left) {
            PyErr_Fetch(&et, &ev, &tb);
            leave_active(x[X_active]);
            PyErr_Restore(et, ev, tb);
        }
        goto out;
    }
    if (PyList_GET_SIZE(values) >= BATCH_FOLD_AT) {
        PyObject *folded = PyObject_CallMethodNoArgs(batch, s_fold_now);
        if (folded == NULL)
            goto out;
        Py_DECREF(folded);
    }
    r = 1;
out:
    if (r == 0 && PyErr_Occurred()) { /* not begun: record_http meets an Exception again */
        if (PyErr_ExceptionMatches(PyExc_Exception))
            PyErr_Clear();
        else
            r = -2; /* a KeyboardInterrupt...: raised, the request out of the gauge */
    }
    Py_XDECREF(overheads);
    Py_XDECREF(route_given);
    Py_XDECREF(key);
    Py_XDECREF(series);
    Py_XDECREF(batch);
    Py_XDECREF(values);
    Py_XDECREF(entry);
    Py_XDECREF(lock);
    Py_XDECREF(successor);
    return r;
}

/* finish(ex, failure): asgi._finish.finish_py for a request that ended as most do: no
 * exception, a whole response with a status below 400, no propagated context, the runtime in
 * force. An operation without an adapter, replay, held entity or held tallies ends here
 * (end_impl), unsampled with nothing to rescue or sampled (its span, when the server span is
 * syncperf's, told the outcome by span_outcome first); any other goes to finish_operation.
 * Its HTTP metrics are queued here when their series is bound, and by record_http otherwise.
 * A request that ended otherwise, or a patched helper or clock, goes to finish_py whole,
 * before anything is read that could run code. */
static PyObject *
finish(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("finish", nargs, 2, FINISH_SLOW, "bind_finish"))
        return NULL;
    PyObject *ex = args[0], *x[X_N] = {NULL}, *successor = NULL, *scratch = NULL;
    PyObject *matched = NULL, *t_obj = NULL, *pending = NULL, *r = NULL, *span = NULL;
    PyObject *owned = NULL;
    long long complete, t0, received, clen, sent, prologue, status, t_end;
    int plain = args[1] == Py_None ? unpatched() : 0;
    if (plain < 0)
        return NULL;
    if (!plain)
        goto slow;
    for (int i = 0; i < X_N; i++)
        if ((x[i] = slot_get(ex, X_STR[i], &X_SLOT[i])) == NULL)
            goto unread;
    if ((successor = PyObject_GetAttr(x[X_rt], s_successor)) == NULL)
        goto unread;
    if (successor != Py_None || x[X_left_early] != Py_False || x[X_token] != Py_None ||
        !ll_field(x[X_complete_ns], &complete) || !complete ||
        !ll_field(x[X_status], &status) || status < 100 || status >= 400 ||
        !ll_field(x[X_t0], &t0) || !ll_field(x[X_received], &received) ||
        !ll_field(x[X_content_length], &clen) || !ll_field(x[X_sent], &sent) ||
        !ll_field(x[X_prologue_ns], &prologue) ||
        (x[X_live] != Py_True && x[X_live] != Py_False) || !PyUnicode_CheckExact(x[X_method]) ||
        !PyUnicode_CheckExact(x[X_scheme]) || !PyDict_CheckExact(x[X_scope]))
        goto slow;
    PyObject *op = x[X_op];
    int op_c = 0; /* (a path entity held: the operation's entity changed, end() ends it) */
    if (op != Py_None && PyObject_TypeCheck(op, &OpType) && x[X_adapter] == Py_None &&
        x[X_replayed] == Py_False && x[X_held_entity] == Py_None) {
        span = ((Op *)op)->span;
        if (span != NULL && span != Py_None) { /* sampled: told the outcome if it is syncperf's */
            owned = slot_get(ex, X_STR[X_owned], &X_SLOT[X_owned]);
            if (owned == NULL)
                goto unread;
            span = owned == Py_False && ((Op *)op)->parent_ctx == Py_None ? Py_NewRef(span) : NULL;
        } else {
            span = span == Py_None ? Py_NewRef(span) : NULL;
        }
        if (span != NULL) {
            if ((scratch = PyObject_GetAttr(op, s_scratch)) == NULL)
                goto unread;
            op_c = scratch == Py_None;
        }
    }
    if (now_ns(&t_end) < 0)
        goto done;
    if (complete > t_end)
        op_c = 0;
    int ends = 0; /* end() called here: the route raised what finish_operation lets through */
    if (op_c) { /* finish_operation's work, for this operation: the route, then end() */
        matched = route_of(x[X_scope], x[X_entry_root]);
        op_c = matched != NULL;
        if (!op_c && !PyErr_ExceptionMatches(PyExc_Exception)) {
            keep(&pending); /* (a KeyboardInterrupt...): raised after end(), no route */
            ends = 1;
        }
        PyErr_Clear(); /* an Exception: finish_operation asks again, and says */
    }
    if ((t_obj = PyLong_FromLongLong(t_end)) == NULL)
        goto done;
    int told = 0; /* the span told the outcome: whatever end_impl says, end() ends it */
    if (op_c && span != Py_None) { /* finish_operation's `elif not ex.owned` */
        PyObject *argv[4] = {ex, span, Py_None, matched};
        PyObject *none = PyObject_Vectorcall(FINISH_W.orig[W_span_outcome], argv, 4, NULL);
        if (none == NULL && (!PyErr_ExceptionMatches(PyExc_Exception) ||
                             hook_failed(x[X_rt], s_outcome_failed) < 0)) {
            keep(&pending); /* raised out of finish_operation after its end(): no route */
            Py_CLEAR(matched);
        }
        Py_XDECREF(none);
        told = 1;
    }
    if (op_c || ends) {
        long long clock;
        int ended = end_impl((Op *)op, t_end, 1, complete, &NO_HINTS, &clock);
        if (ended == 0 && (ends || told)) { /* not plain: the Python end */
            PyObject *end_ns = PyLong_FromLongLong(complete);
            PyObject *argv[4] = {op, Py_None, end_ns, t_obj}, *none = NULL;
            if (end_ns != NULL)
                none = PyObject_Vectorcall(FINISH_W.orig[W_end], argv, 4, NULL);
            Py_XDECREF(end_ns);
            Py_XDECREF(none);
            ended = none == NULL ? -1 : 1;
        }
        if (ended < 0) { /* (strict mode: hook_failed raises, and finish has no route) */
            if (!PyErr_ExceptionMatches(PyExc_Exception) || hook_failed(x[X_rt], s_end_failed) < 0) {
                Py_CLEAR(matched);
                keep(&pending);
            }
        } else if (ended == 0) {
            op_c = 0;
            Py_CLEAR(matched);
        }
    }
    if (op != Py_None && !op_c && !ends) {
        PyObject *argv[5] = {ex, op, Py_None, Py_None, t_obj};
        matched = PyObject_Vectorcall(FINISH_W.orig[W_finish_operation], argv, 5, NULL);
        if (matched == NULL)
            keep(&pending);
    }
    int recorded = x[X_http] == Py_None ? 0
                                        : record_c(x, matched, t_end, complete, t0, received,
                                                   clen, sent, prologue);
    if (recorded == -2) { /* raised what record_http lets through: its `finally` */
        keep(&pending);
        leave_active(x[X_active]);
    } else if (recorded < 0 && hook_failed(x[X_rt], s_http_failed) < 0) {
        keep(&pending);
    }
    if (recorded == 0) {
        PyObject *argv[5] = {ex, Py_None, Py_None, matched ? matched : Py_None, t_obj};
        PyObject *none = PyObject_Vectorcall(FINISH_W.orig[W_record_http], argv, 5, NULL);
        if (none == NULL)
            keep(&pending);
        Py_XDECREF(none);
    }
    if (pending == NULL)
        r = Py_NewRef(Py_None);
    else /* raised again, with its traceback */
        PyErr_Restore(Py_NewRef(Py_TYPE(pending)), Py_NewRef(pending),
                      PyException_GetTraceback(pending));
    goto done;
unread: /* a field not set or not readable: finish_py reads it too */
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        goto done;
    PyErr_Clear();
slow:
    r = PyObject_Vectorcall(FINISH_SLOW, args, 2, NULL);
done:
    for (int i = 0; i < X_N; i++)
        Py_XDECREF(x[i]);
    Py_XDECREF(successor);
    Py_XDECREF(scratch);
    Py_XDECREF(span);
    Py_XDECREF(owned);
    Py_XDECREF(matched);
    Py_XDECREF(t_obj);
    Py_XDECREF(pending);
    return r;
}

/* ---- the start of a request (asgi._exchange) ------------------------------------------ */

/* What new_exchange and open_exchange call of _exchange's namespace (checked as finish's) */
enum { E_begin, E_valid_headers, E_record_key, E_read_client, E_mount_base, E_is_live,
       E_extract, E_gate_name, E_text, E_perf, E_context_api, E_current_span, E_owners,
       E_read_scope, E_read_headers, E_N };
static const char *const E_NAMES[E_N] = {"begin", "valid_headers", "record_key", "read_client",
                                   "mount_base", "is_live", "extract", "gate_name", "text",
                                   "_perf", "context_api", "current_span", "owners",
                                   "read_scope", "read_headers"};
static Watch EXCHANGE_W = {.n = E_N, .names = E_NAMES};
static PyObject *EXCHANGE_TYPE, *OPEN_SLOW, *START_FN;
static PyObject *PROPAGATE_NS, *TEXTMAP_FN; /* opentelemetry.propagate: its global propagator */
static PyObject *SERVER_KIND, *NO_FIELDS, *NO_HEADERS, *OTHER_NAME, *LIVE_REQUEST,
    *LIVE_QUERY, *MINUS_ONE;
static PyObject *s_contrib, *s_telemetry, *s_route, *s_template_attr, *s_adapter, *s_operation_attr,
    *s_entity_plain, *s_series_map, *s_http_method, *s_active_series, *s_active_for, *s_headers_key,
    *s_fields_method, *s_idem_name,
    *s_entities_attr, *s_names_from, *s_entity_text, *s_live_attr, *s_internal_error,
    *s_live_failed, *s_live_names, *s_attach, *s_url_path, *s_drop,
    *s_invalid_entity, *s_invalid_text, *s_hold, *s_entity_field,
    *s_query_string, *s_rt_entities, *a_method, *a_scheme, *a_url_path, *a_route,
    *s_start_name, *s_get_textmap, *s_propagator, *s_textmap_attr, *s_fields_attr, *s_live_eq,
    *s_feed_eq;

/* bind_exchange(namespace, Exchange, Exchange.open, (INVALID_SPAN, SpanKind.SERVER, no fields,
 * no headers, OTHER, live_request, live_query)) */
static PyObject *
bind_exchange(PyObject *mod, PyObject *args)
{
    PyObject *ns, *cls, *open, *invalid, *server, *no_fields, *no_headers, *other, *live;
    PyObject *query, *propagate;
    if (!PyArg_ParseTuple(args, "O!O!O(OOO!O!OOOO!):bind_exchange", &PyDict_Type, &ns,
                          &PyType_Type, &cls, &open, &invalid, &server, &PyFrozenSet_Type,
                          &no_fields, &PyTuple_Type, &no_headers, &other, &live, &query,
                          &PyDict_Type, &propagate))
        return NULL;
    if (X_STR[0] == NULL || HEADERS_SLOW == NULL || CLOCKS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_exchange: bind_finish and bind_read first");
        return NULL;
    }
    PyObject *parent = PyObject_CallMethod(invalid, "get_span_context", NULL);
    if (parent == NULL)
        return NULL;
    Py_XSETREF(INVALID_PARENT, parent);
    Py_XSETREF(INVALID_SPAN, Py_NewRef(invalid));
    Py_XSETREF(SERVER_KIND, Py_NewRef(server));
    Py_XSETREF(NO_FIELDS, Py_NewRef(no_fields));
    Py_XSETREF(NO_HEADERS, Py_NewRef(no_headers));
    Py_XSETREF(OTHER_NAME, Py_NewRef(other));
    Py_XSETREF(LIVE_REQUEST, Py_NewRef(live));
    Py_XSETREF(LIVE_QUERY, Py_NewRef(query));
#define EX_INTERN(var, text)                                                                 \
    if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL)                     \
        return NULL;
    EX_INTERN(s_contrib, "_contrib") EX_INTERN(s_telemetry, "fastapi.telemetry")
    EX_INTERN(s_route, "route") EX_INTERN(s_template_attr, "template")
    EX_INTERN(s_adapter, "adapter") EX_INTERN(s_operation_attr, "operation")
    EX_INTERN(s_entity_plain, "entity") EX_INTERN(s_series_map, "_series")
    EX_INTERN(s_http_method, "http") EX_INTERN(s_active_series, "active_series")
    EX_INTERN(s_active_for, "active_for") EX_INTERN(s_headers_key, "headers")
    EX_INTERN(s_fields_method, "propagation_fields") EX_INTERN(s_idem_name, "_idem_name")
    EX_INTERN(s_entities_attr, "_entities") EX_INTERN(s_names_from, "names_from_requests")
    EX_INTERN(s_entity_text, "the {entity} of a route") EX_INTERN(s_live_attr, "_live")
    EX_INTERN(s_internal_error, "internal_error")
    EX_INTERN(s_live_failed, "asgi_live_predicate_failed")
    EX_INTERN(s_live_names, "_live_names") EX_INTERN(s_attach, "attach")
    EX_INTERN(s_url_path, "url_path")
    EX_INTERN(s_drop, "drop") EX_INTERN(s_invalid_entity, "invalid_entity")
    EX_INTERN(s_invalid_text, "syncperf dropped a path entity that is not a valid name")
    EX_INTERN(s_hold, "hold")
    EX_INTERN(s_entity_field, "_entity") EX_INTERN(s_query_string, "query_string")
    EX_INTERN(s_rt_entities, "entities") EX_INTERN(a_method, "http.request.method")
    EX_INTERN(a_scheme, "url.scheme") EX_INTERN(a_url_path, "url.path")
    EX_INTERN(a_route, "http.route") EX_INTERN(s_start_name, "start")
    if (s_live_eq == NULL && ((s_live_eq = PyBytes_FromString("live=")) == NULL ||
                              (s_feed_eq = PyBytes_FromString("feed=")) == NULL))
        return NULL;
    EX_INTERN(s_get_textmap, "get_global_textmap") EX_INTERN(s_propagator, "_HTTP_TEXT_FORMAT")
    EX_INTERN(s_textmap_attr, "_textmap") EX_INTERN(s_fields_attr, "_fields")
#undef EX_INTERN
    if (MINUS_ONE == NULL && (MINUS_ONE = PyLong_FromLong(-1)) == NULL)
        return NULL;
    if (watch_bind(&EXCHANGE_W, ns, "bind_exchange") < 0)
        return NULL;
    PyObject *start_fn = bound_item(CLOCKS, s_start_name, "bind_exchange");
    PyObject *textmap_fn = bound_item(propagate, s_get_textmap, "bind_exchange");
    if (start_fn == NULL || textmap_fn == NULL)
        return NULL;
    Py_XSETREF(START_FN, Py_NewRef(start_fn));
    Py_XSETREF(TEXTMAP_FN, Py_NewRef(textmap_fn));
    Py_XSETREF(PROPAGATE_NS, Py_NewRef(propagate));
    Py_XSETREF(EXCHANGE_TYPE, Py_NewRef(cls));
    Py_XSETREF(OPEN_SLOW, Py_NewRef(open));
    Py_RETURN_NONE;
}

/* Whether _exchange's namespace still holds what was bound and the clock is perf_counter_ns
 * (0: the Python path; -1: an error) */
static int
exchange_unpatched(void)
{
    int same = watch_same(&EXCHANGE_W);
    if (same <= 0)
        return same;
    static Found perf_found, start_found;
    PyObject *perf = item_of(CLOCKS, s_perf, &perf_found);
    PyObject *start_fn = perf == NULL ? NULL : item_of(CLOCKS, s_start_name, &start_found);
    if (start_fn == NULL && PyErr_Occurred())
        return -1;
    return perf == PERF_NS && EXCHANGE_W.orig[E_perf] == PERF_NS && start_fn == START_FN;
}

/* A new reference to value set in ex's field i (its slot, when it is a plain one) */
static int
x_set(PyObject *ex, int i, PyObject *value)
{
    PyObject **field = slot_of(ex, X_STR[i], &X_SLOT[i]);
    if (field == NULL)
        return PyObject_SetAttr(ex, X_STR[i], value);
    Py_XSETREF(*field, Py_NewRef(value));
    return 0;
}

/* The span current in OpenTelemetry's default runtime context, when none is: INVALID_SPAN
 * (borrowed); NULL otherwise (or with an error) */
static PyObject *
no_current_span(void)
{
    if (CONTEXT_VAR == NULL)
        return NULL;
    PyObject *in_force = PyDict_GetItemWithError(CONTEXT_NS, s_runtime_context);
    if (in_force != RUNTIME)
        return NULL;
    PyObject *now = NULL;
    if (PyContextVar_Get(CONTEXT_VAR, NULL, &now) < 0)
        return NULL;
    PyObject *span = now != NULL && PyDict_Check(now) ? PyDict_GetItemWithError(now, SPAN_KEY)
                                                      : Py_None;
    Py_XDECREF(now);
    return span == NULL && !PyErr_Occurred() ? INVALID_SPAN : NULL;
}

/* new_exchange(mw, rt, shared, scope, t0): Exchange(...) for a request whose scope is a dict of
 * known method and scheme and a str root path, no FastAPI telemetry, contrib not in the app's
 * stack and no span current: its fields set here, as Exchange.__init__ sets them (the
 * instance made as object.__new__ makes it). Any other goes to Exchange(...). */
static PyObject *
new_exchange(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("new_exchange", nargs, 5, EXCHANGE_TYPE, "bind_exchange"))
        return NULL;
    PyObject *mw = args[0], *scope = args[3], *contrib = NULL, *read = NULL, *ex = NULL;
    int plain = PyDict_CheckExact(scope) && PyLong_CheckExact(args[4]) ? exchange_unpatched() : 0;
    if (plain < 0)
        return NULL;
    if (!plain || (contrib = PyObject_GetAttr(mw, s_contrib)) == NULL || contrib != Py_False ||
        PyDict_GetItemWithError(scope, s_telemetry) != NULL || PyErr_Occurred())
        goto slow;
    PyObject *current = no_current_span();
    if (current == NULL || (read = read_scope(NULL, scope)) == NULL || !PyTuple_Check(read))
        goto slow;
    PyTypeObject *type = (PyTypeObject *)EXCHANGE_TYPE;
    if ((ex = type->tp_alloc(type, 0)) == NULL)
        goto done;
    const struct {
        int field;
        PyObject *value;
    } set[] = {
        {X_mw, mw}, {X_rt, args[1]}, {X_shared, args[2]}, {X_scope, scope}, {X_t0, args[4]},
        {X_op, Py_None}, {X_token, Py_None}, {X_template, Py_None}, {X_adapter, Py_None},
        {X_live, Py_False}, {X_idem_key, Py_None}, {X_held_entity, Py_None},
        {X_http, Py_None}, {X_active, Py_None}, {X_content_length, MINUS_ONE},
        {X_continues, Py_False}, {X_encoded, Py_False}, {X_answer_encoded, Py_False},
        {X_status, Py_None}, {X_sent, ZERO}, {X_received, ZERO}, {X_complete_ns, ZERO},
        {X_disconnected, Py_False}, {X_replayed, Py_False}, {X_left_early, Py_False},
        {X_read_ahead, Py_None}, {X_response_chunks, Py_None}, {X_prologue_ns, ZERO},
        {X_method, PyTuple_GET_ITEM(read, 0)}, {X_scheme, PyTuple_GET_ITEM(read, 1)},
        {X_entry_root, PyTuple_GET_ITEM(read, 2)}, {X_current, current},
        {X_owner_span, Py_None}, {X_owned, Py_False}, {X_metered_into, Py_None},
    };
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        if (x_set(ex, set[i].field, set[i].value) < 0) {
            Py_CLEAR(ex);
            goto done;
        }
    goto done;
slow:
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            goto done;
        PyErr_Clear();
    }
    ex = PyObject_Vectorcall(EXCHANGE_TYPE, args, 5, NULL);
done:
    Py_XDECREF(contrib);
    Py_XDECREF(read);
    return ex;
}

/* The default live predicate for a request: `stream`, or the query string's live parameter
 * (live_query, called when a query has `live=` or `feed=`); -1 with an error */
static int
live_default(PyObject *scope, int stream)
{
    if (stream)
        return 1;
    PyObject *query = PyDict_GetItemWithError(scope, s_query_string);
    if (query == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyBytes_CheckExact(query))
        return 0;
    if (!bytes_in(s_live_eq, query) && !bytes_in(s_feed_eq, query))
        return 0;
    Py_INCREF(query);
    PyObject *r = PyObject_CallOneArg(LIVE_QUERY, query);
    Py_DECREF(query);
    int truth = r == NULL ? -1 : PyObject_IsTrue(r);
    Py_XDECREF(r);
    return truth;
}

/* op._entity, held = rt.entities.hold(entity); ex.held_entity = entity when held (0, -1) */
static int
hold_entity(PyObject *ex, PyObject *rt, PyObject *op, PyObject *entity)
{
    PyObject *entities = PyObject_GetAttr(rt, s_rt_entities);
    PyObject *pair = entities == NULL ? NULL
                                      : PyObject_CallMethodOneArg(entities, s_hold, entity);
    Py_XDECREF(entities);
    if (pair == NULL)
        return -1;
    PyObject *name, *held;
    int r = -1;
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "entities.hold: a pair expected");
    } else {
        name = PyTuple_GET_ITEM(pair, 0), held = PyTuple_GET_ITEM(pair, 1);
        int truth = PyObject_SetAttr(op, s_entity_field, name) < 0 ? -1 : PyObject_IsTrue(held);
        r = truth < 0 ? -1 : truth ? x_set(ex, X_held_entity, entity) : 0;
    }
    Py_DECREF(pair);
    return r;
}

/* Exchange.start_operation for a route without an adapter: a new reference to the operation,
 * NULL with an error (where the Python one raises: the fields it set by then are set) */
static PyObject *
start_operation_c(PyObject *ex, PyObject **x, PyObject *compiled, PyObject *route,
                  PyObject *entity, int traced, PyObject *propagated, int stream)
{
    PyObject *rt = x[X_rt], *mw = x[X_mw], *scope = x[X_scope], *root = x[X_entry_root];
    PyObject *template = NULL, *base = NULL, *http_route = NULL, *kept = NULL, *names = NULL;
    PyObject *operation = NULL, *attributes = NULL, *parent = NULL, *token = NULL;
    PyObject *url_path = NULL, *key = NULL, *op = NULL, *r = NULL, *plain_entity = NULL;
    PyObject *bound = NULL, *predicate = NULL, *said = NULL;
    PyObject *argv[7] = {scope, root};
    PyObject *mounted = PyDict_GetItemWithError(scope, s_app_root); /* mount_base: "" */
    if (mounted == NULL && PyErr_Occurred())
        goto done;
    if ((template = PyObject_GetAttr(compiled, s_template_attr)) == NULL ||
        (base = mounted == NULL ? PyUnicode_FromStringAndSize("", 0)
                                : PyObject_Vectorcall(EXCHANGE_W.orig[E_mount_base], argv, 2, NULL)) ==
            NULL ||
        (http_route = PyNumber_Add(base, template)) == NULL ||
        x_set(ex, X_template, http_route) < 0 || x_set(ex, X_adapter, Py_None) < 0)
        goto done;
    if (entity != Py_None) { /* path_entity */
        PyObject *allowed = PyObject_GetAttr(mw, s_entities_attr);
        if (allowed == NULL)
            goto done;
        int in = 1;
        if (allowed == Py_None) {
            said = PyObject_CallMethodOneArg(rt, s_names_from, s_entity_text);
            in = said == NULL ? -1 : 1;
            Py_CLEAR(said);
        } else {
            in = PySequence_Contains(allowed, entity);
        }
        Py_DECREF(allowed);
        if (in < 0)
            goto done;
        kept = Py_NewRef(in ? entity : OTHER_NAME);
    }
    if ((predicate = PyObject_GetAttr(mw, s_live_attr)) == NULL)
        goto done;
    int live;
    if (predicate == LIVE_REQUEST) {
        live = live_default(scope, stream);
    } else {
        argv[0] = predicate, argv[1] = scope, argv[2] = stream ? Py_True : Py_False;
        said = PyObject_Vectorcall(EXCHANGE_W.orig[E_is_live], argv, 3, NULL);
        live = said == NULL ? -1 : PyObject_IsTrue(said);
        Py_CLEAR(said);
    }
    if (live < 0) { /* the predicate raised: counted (strict mode raises), not live */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            goto done;
        PyObject *error = raised();
        said = PyObject_CallMethodObjArgs(rt, s_internal_error, s_live_failed, error, NULL);
        Py_DECREF(error);
        if (said == NULL)
            goto done;
        Py_CLEAR(said);
        live = 0;
    } else if (live && x_set(ex, X_live, Py_True) < 0) {
        goto done;
    }
    if ((operation = PyObject_GetAttr(route, s_operation_attr)) == NULL)
        goto done;
    if (live) {
        if ((names = PyObject_GetAttr(mw, s_live_names)) == NULL)
            goto done;
        Py_SETREF(operation, PyObject_GetItem(names, operation));
        if (operation == NULL)
            goto done;
    }
    if (traced) {
        if (propagated != Py_None) {
            argv[0] = rt, argv[1] = propagated;
            if ((parent = PyObject_Vectorcall(EXCHANGE_W.orig[E_extract], argv, 2, NULL)) == NULL)
                goto done;
            if (parent != Py_None &&
                ((token = PyObject_CallMethodOneArg(EXCHANGE_W.orig[E_context_api], s_attach, parent)) ==
                     NULL ||
                 x_set(ex, X_token, token) < 0))
                goto done;
        }
        if (PyUnicode_GET_LENGTH(root) > 0) {
            PyObject *whole = PyNumber_Add(root, template);
            url_path = whole == NULL ? NULL : PyObject_CallOneArg(EXCHANGE_W.orig[E_text], whole);
            Py_XDECREF(whole);
        } else {
            url_path = PyObject_GetAttr(compiled, s_url_path);
        }
        if (url_path == NULL || (attributes = PyDict_New()) == NULL ||
            PyDict_SetItem(attributes, a_method, x[X_method]) < 0 ||
            PyDict_SetItem(attributes, a_scheme, x[X_scheme]) < 0 ||
            PyDict_SetItem(attributes, a_url_path, url_path) < 0 ||
            PyDict_SetItem(attributes, a_route, http_route) < 0)
            goto done;
    }
    if ((plain_entity = PyObject_GetAttr(route, s_entity_plain)) == NULL)
        goto done;
    PyObject *current = token != NULL ? Py_None : x[X_current];
    PyObject *attrs = attributes != NULL ? attributes : Py_None;
    PyObject *series_map = PyObject_GetAttr(rt, s_op_series); /* begin's lookup */
    if (series_map != NULL && PyDict_CheckExact(series_map) &&
        (key = PyTuple_Pack(2, operation, plain_entity)) != NULL)
        bound = Py_XNewRef(PyDict_GetItemWithError(series_map, key));
    Py_XDECREF(series_map);
    if (bound == NULL && PyErr_Occurred())
        goto done;
    if (bound != NULL) {
        argv[0] = rt, argv[1] = bound, argv[2] = SERVER_KIND, argv[3] = attrs;
        argv[4] = x[X_t0], argv[5] = current;
        op = start(NULL, argv, 6, NULL);
    } else {
        argv[0] = rt, argv[1] = operation, argv[2] = plain_entity, argv[3] = SERVER_KIND;
        argv[4] = attrs, argv[5] = x[X_t0], argv[6] = current;
        op = PyObject_Vectorcall(EXCHANGE_W.orig[E_begin], argv, 7, NULL);
    }
    if (op == NULL || x_set(ex, X_op, op) < 0)
        goto done;
    if (kept != NULL) {
        if ((said = PyObject_CallOneArg(EXCHANGE_W.orig[E_gate_name], kept)) == NULL)
            goto done;
        if (said == Py_None) { /* client data: never raised */
            Py_SETREF(said, PyObject_CallMethodObjArgs(rt, s_drop, s_invalid_entity,
                                                       s_invalid_text, NULL));
            if (said == NULL)
                goto done;
        } else if (hold_entity(ex, rt, op, kept) < 0) { /* known while the handler runs */
            goto done;
        }
    }
    r = Py_NewRef(op);
done:
    Py_XDECREF(template);
    Py_XDECREF(base);
    Py_XDECREF(http_route);
    Py_XDECREF(kept);
    Py_XDECREF(names);
    Py_XDECREF(operation);
    Py_XDECREF(attributes);
    Py_XDECREF(parent);
    Py_XDECREF(token);
    Py_XDECREF(url_path);
    Py_XDECREF(key);
    Py_XDECREF(op);
    Py_XDECREF(plain_entity);
    Py_XDECREF(bound);
    Py_XDECREF(predicate);
    Py_XDECREF(said);
    return r;
}

/* shared.propagation_fields(): the fields it keeps while the global propagator is the one it
 * read them from (AsgiState.propagation_fields reads them again otherwise) */
static PyObject *
propagation_fields(PyObject *shared)
{
    static Found fn_found, map_found;
    PyObject *fn = item_of(PROPAGATE_NS, s_get_textmap, &fn_found);
    PyObject *now = fn == TEXTMAP_FN ? item_of(PROPAGATE_NS, s_propagator, &map_found) : NULL;
    PyObject *known = now == NULL ? NULL : PyObject_GetAttr(shared, s_textmap_attr);
    PyObject *fields = known != NULL && known == now ? PyObject_GetAttr(shared, s_fields_attr)
                                                     : NULL;
    Py_XDECREF(known);
    if (fields != NULL && PyFrozenSet_CheckExact(fields))
        return fields;
    Py_XDECREF(fields);
    if (dropped_exception() < 0) /* (the method reads them again) */
        return NULL;
    return PyObject_CallMethodNoArgs(shared, s_fields_method);
}

/* open_exchange(ex, hit, metered): Exchange.open for a request new_exchange made (its fields as
 * Exchange.__init__ sets them: no other instrumentation owns it) and a route without an
 * adapter; its Python helpers called as open calls them, in the same order. Any other goes
 * to Exchange.open whole, before anything is set. */
static PyObject *
open_exchange(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("open_exchange", nargs, 3, EXCHANGE_TYPE, "bind_exchange"))
        return NULL;
    PyObject *ex = args[0], *hit = args[1], *metered = args[2], *r = NULL;
    PyObject *x[X_ALL] = {NULL}, *compiled = NULL, *route = NULL, *adapter = NULL;
    PyObject *http = NULL, *active = NULL, *key = NULL, *headers = NULL, *tracing = NULL;
    PyObject *fields = NULL, *found = NULL, *op = NULL, *said = NULL;
    PyObject *entity = Py_None;
    static const int READ[] = {X_rt, X_shared, X_scope, X_mw, X_method, X_scheme, X_entry_root,
                               X_owned, X_owner_span, X_metered_into, X_t0, X_current};
    long long t0;
    int plain = Py_IS_TYPE(ex, (PyTypeObject *)EXCHANGE_TYPE) &&
                        (metered == Py_True || metered == Py_False)
                    ? exchange_unpatched()
                    : 0;
    if (plain < 0)
        return NULL;
    if (!plain)
        goto slow;
    for (size_t i = 0; i < sizeof READ / sizeof READ[0]; i++)
        if ((x[READ[i]] = slot_get(ex, X_STR[READ[i]], &X_SLOT[READ[i]])) == NULL)
            goto unread;
    if (x[X_owned] != Py_False || x[X_owner_span] != Py_None || x[X_metered_into] != Py_None ||
        !ll_field(x[X_t0], &t0) || !PyDict_CheckExact(x[X_scope]) ||
        !PyUnicode_CheckExact(x[X_method]) || !PyUnicode_CheckExact(x[X_scheme]) ||
        !PyUnicode_CheckExact(x[X_entry_root]))
        goto slow;
    if (hit != Py_None) {
        if (!PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 2)
            goto slow;
        compiled = PyTuple_GET_ITEM(hit, 0), entity = PyTuple_GET_ITEM(hit, 1);
        if (entity != Py_None && !PyUnicode_CheckExact(entity))
            goto slow;
        if ((route = PyObject_GetAttr(compiled, s_route)) == NULL ||
            (adapter = PyObject_GetAttr(route, s_adapter)) == NULL)
            goto unread;
        if (adapter != Py_None)
            goto slow;
    }
    PyObject *rt = x[X_rt], *shared = x[X_shared], *scope = x[X_scope], *mw = x[X_mw];
    if (metered == Py_True) { /* first: a failure below (strict mode) still records it */
        PyObject *series = PyObject_GetAttr(shared, s_series_map);
        http = series != NULL && PyDict_CheckExact(series)
                   ? Py_XNewRef(PyDict_GetItemWithError(series, Py_None))
                   : NULL;
        Py_XDECREF(series);
        if (http == NULL) { /* (AsgiState.http reads them again) */
            if (dropped_exception() < 0 ||
                (http = PyObject_CallMethodNoArgs(shared, s_http_method)) == NULL)
                goto done;
        }
        PyObject *actives = PyObject_GetAttr(http, s_active_series);
        if (actives != NULL && PyDict_CheckExact(actives) &&
            (key = PyTuple_Pack(2, x[X_method], x[X_scheme])) != NULL)
            active = Py_XNewRef(PyDict_GetItemWithError(actives, key));
        Py_XDECREF(actives);
        if (active == NULL && dropped_exception() == 0)
            active = PyObject_CallMethodObjArgs(http, s_active_for, x[X_method], x[X_scheme],
                                                NULL);
        if (active == NULL || (said = PyObject_CallMethodOneArg(active, s_append, Py_None)) ==
                                  NULL ||
            x_set(ex, X_active, active) < 0 || x_set(ex, X_http, http) < 0)
            goto done;
        Py_CLEAR(said);
    }
    headers = Py_XNewRef(PyDict_GetItemWithError(scope, s_headers_key)); /* `or ()` */
    int given = headers == NULL ? 0 : PyObject_IsTrue(headers); /* (may run code) */
    if (given < 0 || (headers == NULL && PyErr_Occurred()))
        goto done;
    if (!given)
        Py_XSETREF(headers, Py_NewRef(s_empty_tuple));
    int traced = 0;
    if (hit != Py_None) { /* "can spans be made": on, or turning on now (Tracing.due) */
        if ((tracing = PyObject_GetAttr(rt, s_tracing)) == NULL)
            goto done;
        PyObject *on = PyObject_GetAttr(tracing, s_active);
        traced = on == NULL ? -1 : PyObject_IsTrue(on);
        Py_XDECREF(on);
        if (traced == 0) {
            PyObject *next = PyObject_GetAttr(tracing, s_next_check);
            traced = next == NULL ? -1 : PyObject_RichCompareBool(x[X_t0], next, Py_GE);
            Py_XDECREF(next);
            if (traced > 0) {
                PyObject *due = PyObject_CallMethodOneArg(tracing, s_due, x[X_t0]);
                traced = due == NULL ? -1 : PyObject_IsTrue(due);
                Py_XDECREF(due);
            }
        }
        if (traced < 0)
            goto done;
    }
    if ((fields = traced ? propagation_fields(shared) : Py_NewRef(NO_FIELDS)) == NULL)
        goto done;
    PyObject *idem = PyObject_GetAttr(mw, s_idem_name);
    if (idem == NULL)
        goto done;
    PyObject *argv[5] = {headers, idem, fields};
    found = read_headers(NULL, argv, 3);
    if (found == Py_None) { /* not a list of pairs of bytes: read again, those pairs only */
        argv[0] = rt, argv[1] = headers;
        Py_SETREF(headers, PyObject_Vectorcall(EXCHANGE_W.orig[E_valid_headers], argv, 2, NULL));
        if (headers == NULL) {
            Py_DECREF(idem);
            goto done;
        }
        argv[0] = headers, argv[1] = idem;
        Py_SETREF(found, read_headers(NULL, argv, 3));
        if (found == Py_None)
            Py_SETREF(found, Py_NewRef(NO_HEADERS));
    }
    Py_DECREF(idem);
    if (found == NULL)
        goto done;
    if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 7) {
        PyErr_SetString(PyExc_TypeError, "read_headers: seven values expected");
        goto done;
    }
    PyObject *idem_key = PyTuple_GET_ITEM(found, 1), *client = PyTuple_GET_ITEM(found, 2);
    int propagated = PyObject_IsTrue(PyTuple_GET_ITEM(found, 3));
    int stream = PyObject_IsTrue(PyTuple_GET_ITEM(found, 4));
    if (propagated < 0 || stream < 0 ||
        x_set(ex, X_content_length, PyTuple_GET_ITEM(found, 0)) < 0 ||
        x_set(ex, X_encoded, PyTuple_GET_ITEM(found, 5)) < 0 ||
        x_set(ex, X_continues, PyTuple_GET_ITEM(found, 6)) < 0)
        goto done;
    if (hit != Py_None) {
        op = start_operation_c(ex, x, compiled, route, entity, traced,
                               propagated ? headers : Py_None, stream);
        if (op == NULL)
            goto done;
        if (idem_key != Py_None) {
            argv[0] = op, argv[1] = idem_key, argv[2] = shared, argv[3] = mw;
            if (x_set(ex, X_idem_key, idem_key) < 0 ||
                (said = PyObject_Vectorcall(EXCHANGE_W.orig[E_record_key], argv, 4, NULL)) == NULL)
                goto done;
            Py_CLEAR(said);
        }
        int any = client == Py_None ? 0 : PyObject_IsTrue(client);
        if (any < 0)
            goto done;
        if (any) { /* Sync-Client */
            argv[0] = rt, argv[1] = op, argv[2] = Py_None, argv[3] = scope, argv[4] = client;
            if ((said = PyObject_Vectorcall(EXCHANGE_W.orig[E_read_client], argv, 5, NULL)) == NULL)
                goto done;
        }
    }
    long long now;
    if (now_ns(&now) < 0)
        goto done;
    PyObject *prologue = PyLong_FromLongLong(now - t0);
    if (prologue == NULL)
        goto done;
    int failed = x_set(ex, X_prologue_ns, prologue) < 0 ||
                 (op != NULL && PyObject_SetAttr(op, s_own_ns_attr, prologue) < 0);
    Py_DECREF(prologue);
    if (!failed)
        r = Py_NewRef(Py_None);
    goto done;
unread:
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        goto done;
    PyErr_Clear();
slow:
    r = PyObject_Vectorcall(OPEN_SLOW, args, 3, NULL);
done:
    for (int i = 0; i < X_ALL; i++)
        Py_XDECREF(x[i]);
    Py_XDECREF(route);
    Py_XDECREF(adapter);
    Py_XDECREF(http);
    Py_XDECREF(active);
    Py_XDECREF(key);
    Py_XDECREF(headers);
    Py_XDECREF(tracing);
    Py_XDECREF(fields);
    Py_XDECREF(found);
    Py_XDECREF(op);
    Py_XDECREF(said);
    return r;
}

/* ---- what the middleware decides before the application runs (asgi.enter) ------------- */

enum { N_current, N_route_path, N_active_operation, N_new_exchange, N_perf, N_wrong_type,
       N_AsgiState, N_N };
static const char *const N_NAMES[N_N] = {"current", "route_path", "active_operation", "new_exchange",
                                   "_perf", "wrong_type", "AsgiState"};
static Watch ENTER_W = {.n = N_N, .names = N_NAMES};
static PyObject *ENTER_SLOW, *RUNTIME_NS, *METERED;
static Found INSTALLED_FOUND;
static PyObject *s_enabled, *s_path_key, *s_has_routes, *s_routes_attr,
    *s_static, *s_match, *s_method_key, *s_options, *s_ended_attr, *s_state_attr,
    *s_excluded_mw, *s_excluded, *s_url_disabled, *s_http_metrics, *s_state_method;

/* bind_enter(namespace, enter_py, metered_key): asgi's namespace as it is now, the Python
 * twin, the scope key of a request whose HTTP metrics a middleware records */
static PyObject *
bind_enter(PyObject *mod, PyObject *args)
{
    PyObject *ns, *slow, *metered;
    if (!PyArg_ParseTuple(args, "O!OU:bind_enter", &PyDict_Type, &ns, &slow, &metered))
        return NULL;
    if (EXCHANGE_TYPE == NULL || CURRENT == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_enter: bind_exchange first");
        return NULL;
    }
#define ENTER_INTERN(var, text)                                                              \
    if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL)                     \
        return NULL;
    ENTER_INTERN(s_enabled, "enabled")
    ENTER_INTERN(s_path_key, "path") ENTER_INTERN(s_has_routes, "_has_routes")
    ENTER_INTERN(s_routes_attr, "_routes") ENTER_INTERN(s_static, "static")
    ENTER_INTERN(s_match, "match") ENTER_INTERN(s_method_key, "method")
    ENTER_INTERN(s_options, "OPTIONS") ENTER_INTERN(s_ended_attr, "_ended")
    ENTER_INTERN(s_state_attr, "_state") ENTER_INTERN(s_excluded_mw, "_excluded")
    ENTER_INTERN(s_excluded, "excluded") ENTER_INTERN(s_url_disabled, "url_disabled")
    ENTER_INTERN(s_http_metrics, "_http_metrics") ENTER_INTERN(s_state_method, "state")
#undef ENTER_INTERN
    if (watch_bind(&ENTER_W, ns, "bind_enter") < 0)
        return NULL;
    PyObject *runtime_ns = PyFunction_Check(ENTER_W.orig[N_current])
                               ? PyFunction_GetGlobals(ENTER_W.orig[N_current])
                               : NULL;
    if (runtime_ns == NULL || !PyDict_Check(runtime_ns)) {
        PyErr_SetString(PyExc_TypeError, "bind_enter: current is not _runtime's function");
        return NULL;
    }
    Py_XSETREF(RUNTIME_NS, Py_NewRef(runtime_ns));
    Py_XSETREF(ENTER_SLOW, Py_NewRef(slow));
    Py_XSETREF(METERED, Py_NewRef(metered));
    Py_RETURN_NONE;
}

/* route_path(path, root), for an exact str path (a new reference) */
static PyObject *
routed_path(PyObject *path, PyObject *root)
{
    if (root == NULL || !PyUnicode_CheckExact(root) || PyUnicode_GET_LENGTH(root) == 0)
        return Py_NewRef(path);
    Py_ssize_t n = PyUnicode_GET_LENGTH(root), size = PyUnicode_GET_LENGTH(path);
    int starts = (int)PyUnicode_Tailmatch(path, root, 0, n, -1);
    if (starts < 0)
        return NULL;
    if (!starts)
        return Py_NewRef(path);
    if (size == n)
        return PyUnicode_FromStringAndSize("", 0);
    if (PyUnicode_READ_CHAR(path, n) != '/')
        return Py_NewRef(path);
    return PyUnicode_Substring(path, n, size);
}

/* enter(mw, scope): asgi.enter_py for a request after the first, in a runtime configured and
 * enabled, its path a str: the same decision, the Exchange made by new_exchange. A sync route
 * matched by a template with parameters is matched by RouteTable.match. Any other request
 * goes to enter_py whole, before anything is set. */
static PyObject *
enter(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (!called("enter", nargs, 2, ENTER_SLOW, "bind_enter"))
        return NULL;
    PyObject *mw = args[0], *scope = args[1], *on = NULL, *contrib = NULL, *path = NULL;
    PyObject *t0 = NULL, *flag = NULL, *routed = NULL, *routes = NULL, *table = NULL;
    PyObject *hit = NULL, *outer = NULL, *ended = NULL, *states = NULL, *shared = NULL;
    PyObject *excluded = NULL, *said = NULL, *metrics = NULL, *ex = NULL, *r = NULL;
    int plain = PyDict_CheckExact(scope) && ENTER_W.orig[N_perf] == PERF_NS, truth;
    if (plain && (plain = watch_same(&ENTER_W)) < 0)
        return NULL;
    PyObject *rt = plain ? item_of(RUNTIME_NS, s_installed, &INSTALLED_FOUND) : NULL;
    if (rt == NULL && PyErr_Occurred())
        return NULL;
    if (rt == NULL || rt == Py_None) { /* (not configured yet: current() makes it) */
        rt = NULL;
        goto slow;
    }
    Py_INCREF(rt);
    if ((on = PyObject_GetAttr(rt, s_enabled)) == NULL || (truth = PyObject_IsTrue(on)) < 0 ||
        !truth || (contrib = PyObject_GetAttr(mw, s_contrib)) == NULL || contrib == Py_None)
        goto slow;
    if ((path = Py_XNewRef(PyDict_GetItemWithError(scope, s_path_key))) == NULL ||
        !PyUnicode_CheckExact(path))
        goto slow;
    long long now;
    if (now_ns(&now) < 0 || (t0 = PyLong_FromLongLong(now)) == NULL ||
        (flag = PyObject_GetAttr(mw, s_has_routes)) == NULL || (truth = PyObject_IsTrue(flag)) < 0)
        goto done;
    hit = Py_NewRef(Py_None);
    if (truth) { /* mw._routes.match(route_path(path, scope.get("root_path"))) */
        PyObject *root = PyDict_GetItemWithError(scope, s_root_path_key);
        if ((root == NULL && PyErr_Occurred()) || (routed = routed_path(path, root)) == NULL ||
            (routes = PyObject_GetAttr(mw, s_routes_attr)) == NULL ||
            (table = PyObject_GetAttr(routes, s_static)) == NULL)
            goto done;
        PyObject *found = PyDict_CheckExact(table) ? PyDict_GetItemWithError(table, routed) : NULL;
        if (found == NULL && PyErr_Occurred())
            goto done;
        Py_SETREF(hit, found != NULL ? PyTuple_Pack(2, found, Py_None)
                                     : PyObject_CallMethodOneArg(routes, s_match, routed));
        if (hit == NULL)
            goto done;
    }
    if (PyContextVar_Get(CURRENT, NULL, &outer) < 0)
        goto done;
    if (hit != Py_None) { /* preflight, or an outer sync operation already measures it */
        PyObject *method = PyDict_GetItemWithError(scope, s_method_key);
        int drop = method == NULL ? 0 : PyObject_RichCompareBool(method, s_options, Py_EQ);
        if (drop == 0 && !PyErr_Occurred() && outer != NULL && outer != Py_None) {
            ended = PyObject_GetAttr(outer, s_ended_attr);
            drop = ended == NULL ? -1 : PyObject_Not(ended);
        }
        if (drop < 0 || PyErr_Occurred())
            goto done;
        if (drop)
            Py_SETREF(hit, Py_NewRef(Py_None));
    }
    states = PyObject_GetAttr(rt, s_state_attr); /* rt.state(AsgiState): its slot, or made */
    shared = states != NULL && PyDict_CheckExact(states)
                 ? Py_XNewRef(PyDict_GetItemWithError(states, ENTER_W.orig[N_AsgiState]))
                 : NULL;
    if (shared == NULL) { /* (state() reads it again) */
        if (dropped_exception() < 0 ||
            (shared = PyObject_CallMethodOneArg(rt, s_state_method, ENTER_W.orig[N_AsgiState])) == NULL)
            goto done;
    }
    if (hit == Py_None) { /* a sync route is never excluded */
        if ((excluded = PyObject_GetAttr(mw, s_excluded_mw)) == NULL)
            goto done;
        if (excluded == Py_None) {
            Py_SETREF(excluded, PyObject_GetAttr(shared, s_excluded));
            if (excluded == NULL)
                goto done;
        }
        if ((truth = PyObject_IsTrue(excluded)) < 0)
            goto done;
        if (truth) {
            said = PyObject_CallMethodOneArg(excluded, s_url_disabled, path);
            if (said == NULL || (truth = PyObject_IsTrue(said)) < 0)
                goto done;
            if (truth) { /* passed through */
                r = Py_NewRef(Py_None);
                goto done;
            }
        }
    }
    /* mw._http_metrics and _METERED not in scope */
    if ((metrics = PyObject_GetAttr(mw, s_http_metrics)) == NULL ||
        (truth = PyObject_IsTrue(metrics)) < 0)
        goto done;
    if (truth && (truth = PyDict_Contains(scope, METERED)) >= 0)
        truth = !truth;
    if (truth < 0)
        goto done;
    if (hit == Py_None && !truth) {
        r = Py_NewRef(Py_None);
        goto done;
    }
    if (truth && PyDict_SetItem(scope, METERED, Py_True) < 0)
        goto done;
    PyObject *argv[5] = {mw, rt, shared, scope, t0};
    if ((ex = PyObject_Vectorcall(ENTER_W.orig[N_new_exchange], argv, 5, NULL)) != NULL)
        r = PyTuple_Pack(3, ex, hit, truth ? Py_True : Py_False);
    goto done;
slow:
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            goto done;
        PyErr_Clear();
    }
    r = PyObject_Vectorcall(ENTER_SLOW, args, 2, NULL);
done:
    Py_XDECREF(rt);
    Py_XDECREF(on);
    Py_XDECREF(contrib);
    Py_XDECREF(path);
    Py_XDECREF(t0);
    Py_XDECREF(flag);
    Py_XDECREF(routed);
    Py_XDECREF(routes);
    Py_XDECREF(table);
    Py_XDECREF(hit);
    Py_XDECREF(outer);
    Py_XDECREF(ended);
    Py_XDECREF(states);
    Py_XDECREF(shared);
    Py_XDECREF(excluded);
    Py_XDECREF(said);
    Py_XDECREF(metrics);
    Py_XDECREF(ex);
    return r;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "Bind the Python objects the compiled path uses."},
    {"operations", operations, METH_VARARGS, "Bind what the operation module owns."},
    {"current_operation", current_operation, METH_NOARGS,
     "current_operation($module, /)\n--\n\n"
     "The active sync operation, or a no-op one that records nothing."},
    {"end_plain", (PyCFunction)(void (*)(void))end_plain, METH_FASTCALL,
     "End a plain operation (True), or leave it to the Python end (False)."},
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL | METH_KEYWORDS,
     "start($module, rt, bound, kind=..., attributes=None, now=0, current=None)\n--\n\n"
     "Start an operation and make it current (_lifecycle.start)."},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "Record integer values into a histogram series in one pass."},
    {"fold", (PyCFunction)(void (*)(void))fold, METH_FASTCALL,
     "Queue ended operations' durations and overheads per series."},
    {"forget_pending", forget_pending, METH_NOARGS,
     "In a forked child: drop the pairs the parent's FastPaths queued."},
    {"bind_read", bind_read, METH_VARARGS, "Bind what the readers of asgi._read use."},
    {"bind_finish", bind_finish, METH_VARARGS, "Bind what asgi._finish's finish uses."},
    {"bind_exchange", bind_exchange, METH_VARARGS, "Bind what asgi._exchange's start uses."},
    {"bind_enter", bind_enter, METH_VARARGS, "Bind what asgi's enter uses."},
    {"enter", (PyCFunction)(void (*)(void))enter, METH_FASTCALL,
     "enter($module, mw, scope, /)\n--\n\n"
     "What the middleware decides before the application runs (asgi.enter_py)."},
    {"new_exchange", (PyCFunction)(void (*)(void))new_exchange, METH_FASTCALL,
     "new_exchange($module, mw, rt, shared, scope, t0, /)\n--\n\n"
     "An Exchange for a request (asgi._exchange.Exchange(...))."},
    {"open_exchange", (PyCFunction)(void (*)(void))open_exchange, METH_FASTCALL,
     "open_exchange($module, ex, hit, metered, /)\n--\n\n"
     "What is decided before the application runs (asgi._exchange.Exchange.open)."},
    {"finish", (PyCFunction)(void (*)(void))finish, METH_FASTCALL,
     "finish($module, ex, failure, /)\n--\n\n"
     "The end of a request through the middleware (asgi._finish.finish_py)."},
    {"bind_spans", bind_spans, METH_VARARGS, "Bind what decide_span builds with."},
    {"decide_span", (PyCFunction)(void (*)(void))decide_span, METH_FASTCALL,
     "decide_span($module, standard, op, parent, attributes, /)\n--\n\n"
     "A standard sampler's decision; a dropped span's context made current."},
    {"usable", usable, METH_NOARGS, "Whether this interpreter may use the compiled path."},
    {"read_scope", read_scope, METH_O,
     "read_scope($module, scope, /)\n--\n\n"
     "The scope's known method, scheme and root path (asgi._read.read_scope_py)."},
    {"mark_replayed", (PyCFunction)(void (*)(void))mark_replayed, METH_FASTCALL,
     "mark_replayed($module, ex, headers, name, /)\n--\n\n"
     "Mark a replayed response (asgi._read.mark_replayed_py)."},
    {"read_headers", (PyCFunction)(void (*)(void))read_headers, METH_FASTCALL,
     "read_headers($module, headers, idem_name, fields, /)\n--\n\n"
     "What a request's headers tell (asgi._headers.read_headers_py)."},
    {"sending", (PyCFunction)(void (*)(void))sending, METH_FASTCALL,
     "sending($module, ex, message, /)\n--\n\n"
     "What Exchange.send records of a message (asgi._read.sending_py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "syncperf._speedups", "syncperf's compiled hot path.", -1, methods,
};

#define INTERN(name)                                                                         \
    if ((s_##name = PyUnicode_InternFromString(#name)) == NULL)                              \
        return NULL;

PyMODINIT_FUNC
PyInit__speedups(void)
{
    OWNER = PyInterpreterState_Get();
    INTERN(entity) INTERN(ended) INTERN(append) INTERN(successor) INTERN(inflight) INTERN(pop)
    INTERN(log) INTERN(on) INTERN(slow_ns) INTERN(next_check) INTERN(end) INTERN(popleft)
    INTERN(success) INTERN(error) INTERN(conflicted) INTERN(overhead) INTERN(installed)
    INTERN(tracing) INTERN(active) INTERN(starts) INTERN(counts) INTERN(sum) INTERN(min)
    INTERN(max) INTERN(value) INTERN(touched) INTERN(items) INTERN(batch) INTERN(op_series)
    INTERN(operation) INTERN(detach) INTERN(span_start) INTERN(db_instrumented)
    if ((s_token = PyUnicode_InternFromString("_token")) == NULL ||
        (s_end_span = PyUnicode_InternFromString("_end_span")) == NULL ||
        (s_span_end_failed = PyUnicode_InternFromString("span_end_failed")) == NULL ||
        (s_fed = PyUnicode_InternFromString("_fed")) == NULL ||
        (s_change = PyUnicode_InternFromString("change")) == NULL ||
        (S_CHANGES[0] = PyUnicode_InternFromString("created")) == NULL ||
        (S_CHANGES[1] = PyUnicode_InternFromString("updated")) == NULL ||
        (S_CHANGES[2] = PyUnicode_InternFromString("deleted")) == NULL ||
        (s_perf = PyUnicode_InternFromString("_perf")) == NULL ||
        (s_method = PyUnicode_InternFromString("method")) == NULL ||
        (s_scheme = PyUnicode_InternFromString("scheme")) == NULL ||
        (s_root_path = PyUnicode_InternFromString("root_path")) == NULL ||
        (s_replayed = PyUnicode_InternFromString("replayed")) == NULL ||
        (s_empty = PyUnicode_InternFromString("")) == NULL ||
        (s_type = PyUnicode_InternFromString("type")) == NULL ||
        (s_sync_operation = PyUnicode_InternFromString("SyncOperation")) == NULL ||
        (s_internal = PyUnicode_InternFromString("_INTERNAL")) == NULL ||
        (s_start_span_py = PyUnicode_InternFromString("_start_span")) == NULL ||
        (s_standard = PyUnicode_InternFromString("standard")) == NULL ||
        (s_get_context = PyUnicode_InternFromString("get_span_context")) == NULL ||
        (s_decide_name = PyUnicode_InternFromString("decide_span")) == NULL ||
        (s_span_failed = PyUnicode_InternFromString("span_start_failed")) == NULL ||
        (s_internal_error_name = PyUnicode_InternFromString("internal_error")) == NULL ||
        (s_current_span_name = PyUnicode_InternFromString("current_span")) == NULL ||
        (s_start_py = PyUnicode_InternFromString("_start_py")) == NULL ||
        (s_kind = PyUnicode_InternFromString("_kind")) == NULL ||
        (s_due = PyUnicode_InternFromString("due")) == NULL ||
        (s_start = PyUnicode_InternFromString("start")) == NULL ||
        (s_ctx_token_attr = PyUnicode_InternFromString("_ctx_token")) == NULL ||
        (s_own_ns_attr = PyUnicode_InternFromString("_own_ns")) == NULL ||
        (s_body = PyUnicode_InternFromString("body")) == NULL ||
        (s_more_body = PyUnicode_InternFromString("more_body")) == NULL ||
        (s_status = PyUnicode_InternFromString("status")) == NULL ||
        (s_headers = PyUnicode_InternFromString("headers")) == NULL ||
        (s_sent = PyUnicode_InternFromString("sent")) == NULL ||
        (s_chunks = PyUnicode_InternFromString("response_chunks")) == NULL ||
        (s_max_body = PyUnicode_InternFromString("_max_body")) == NULL ||
        (s_op_attr = PyUnicode_InternFromString("op")) == NULL ||
        (s_mw = PyUnicode_InternFromString("mw")) == NULL ||
        (s_replay_name = PyUnicode_InternFromString("_replay_name")) == NULL ||
        (s_owner_span = PyUnicode_InternFromString("owner_span")) == NULL ||
        (s_body_kind = PyUnicode_InternFromString("http.response.body")) == NULL ||
        (s_start_kind = PyUnicode_InternFromString("http.response.start")) == NULL ||
        (s_empty_bytes = PyBytes_FromStringAndSize("", 0)) == NULL ||
        (s_empty_tuple = PyTuple_New(0)) == NULL ||
        (s_runtime_context = PyUnicode_InternFromString("_RUNTIME_CONTEXT")) == NULL ||
        (s_span_attrs = PyUnicode_InternFromString("_span_attrs")) == NULL ||
        (s_parent_ctx_attr = PyUnicode_InternFromString("_parent_ctx")) == NULL ||
        (s_unsampled_attr = PyUnicode_InternFromString("_unsampled")) == NULL)
        return NULL;
    S_ERROR = PyUnicode_InternFromString("error");
    S_CONFLICT = PyUnicode_InternFromString("conflict");
    S_SUCCESS = PyUnicode_InternFromString("success");
    ZERO = PyLong_FromLong(0);
    ANY = PyTuple_Pack(2, Py_None, Py_None);
    if (ANY == NULL || S_ERROR == NULL || S_CONFLICT == NULL || S_SUCCESS == NULL || ZERO == NULL)
        return NULL;
    if (PyType_Ready(&OpType) < 0 || PyType_Ready(&FastType) < 0 ||
        PyType_Ready(&PhaseType) < 0 || PyType_Ready(&ValuesType) < 0 ||
        PyType_Ready(&CountType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Operation", (PyObject *)&OpType) < 0 ||
        PyModule_AddObjectRef(m, "FastPath", (PyObject *)&FastType) < 0 ||
        PyModule_AddObjectRef(m, "Phase", (PyObject *)&PhaseType) < 0 ||
        PyModule_AddObjectRef(m, "Values", (PyObject *)&ValuesType) < 0 ||
        PyModule_AddObjectRef(m, "Count", (PyObject *)&CountType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
