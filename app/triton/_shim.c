/*
 * The engine's hot path, compiled.
 *
 * Triton calls the response allocator, the response-complete callback and the
 * request-release callback on its own threads. Running them in Python makes
 * every request wait for the GIL, so they live here: outputs are allocated with
 * malloc, each response is unpacked and deleted on Triton's thread, and the
 * result is queued for the asyncio loop, woken through an eventfd. Python only
 * runs on the loop (submit() and drain()).
 *
 * Functions of libtritonserver are resolved with dlsym from the handle that
 * the Python side opened, so the same build works with the NGC library and
 * with the one bundled in the nvidia-pytriton wheel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- the part of tritonserver.h (API 1.x) that this file calls ---- */
typedef struct TRITONSERVER_Error TRITONSERVER_Error;
typedef struct TRITONSERVER_Server TRITONSERVER_Server;
typedef struct TRITONSERVER_InferenceRequest TRITONSERVER_InferenceRequest;
typedef struct TRITONSERVER_InferenceResponse TRITONSERVER_InferenceResponse;
typedef struct TRITONSERVER_ResponseAllocator TRITONSERVER_ResponseAllocator;
typedef struct TRITONSERVER_InferenceTrace TRITONSERVER_InferenceTrace;
typedef int TRITONSERVER_DataType;
typedef int TRITONSERVER_MemoryType;
typedef int TRITONSERVER_ParameterType;

enum { MEMORY_CPU = 0 };
enum { PARAM_STRING = 0, PARAM_INT = 1, PARAM_BOOL = 2, PARAM_DOUBLE = 3, PARAM_BYTES = 4 };
enum { ERROR_INTERNAL = 1, ERROR_INVALID_ARG = 3, ERROR_UNAVAILABLE = 4 };
enum { RESPONSE_COMPLETE_FINAL = 1 };
enum { REQUEST_RELEASE_ALL = 1 };

typedef TRITONSERVER_Error* (*AllocFn)(
    TRITONSERVER_ResponseAllocator*, const char*, size_t, TRITONSERVER_MemoryType, int64_t,
    void*, void**, void**, TRITONSERVER_MemoryType*, int64_t*);
typedef TRITONSERVER_Error* (*ReleaseFn)(
    TRITONSERVER_ResponseAllocator*, void*, void*, size_t, TRITONSERVER_MemoryType, int64_t);
typedef TRITONSERVER_Error* (*StartFn)(TRITONSERVER_ResponseAllocator*, void*);
typedef void (*RequestReleaseFn)(TRITONSERVER_InferenceRequest*, const uint32_t, void*);
typedef void (*ResponseCompleteFn)(TRITONSERVER_InferenceResponse*, const uint32_t, void*);

static struct {
  TRITONSERVER_Error* (*ErrorNew)(int, const char*);
  void (*ErrorDelete)(TRITONSERVER_Error*);
  int (*ErrorCode)(TRITONSERVER_Error*);
  const char* (*ErrorMessage)(TRITONSERVER_Error*);
  const char* (*DataTypeString)(TRITONSERVER_DataType);
  TRITONSERVER_Error* (*ResponseAllocatorNew)(
      TRITONSERVER_ResponseAllocator**, AllocFn, ReleaseFn, StartFn);
  TRITONSERVER_Error* (*RequestNew)(
      TRITONSERVER_InferenceRequest**, TRITONSERVER_Server*, const char*, int64_t);
  TRITONSERVER_Error* (*RequestDelete)(TRITONSERVER_InferenceRequest*);
  TRITONSERVER_Error* (*RequestSetId)(TRITONSERVER_InferenceRequest*, const char*);
  TRITONSERVER_Error* (*RequestSetFlags)(TRITONSERVER_InferenceRequest*, uint32_t);
  TRITONSERVER_Error* (*RequestSetCorrelationId)(TRITONSERVER_InferenceRequest*, uint64_t);
  TRITONSERVER_Error* (*RequestSetCorrelationIdString)(
      TRITONSERVER_InferenceRequest*, const char*);
  TRITONSERVER_Error* (*RequestSetPriorityUInt64)(TRITONSERVER_InferenceRequest*, uint64_t);
  TRITONSERVER_Error* (*RequestSetTimeoutMicroseconds)(TRITONSERVER_InferenceRequest*, uint64_t);
  TRITONSERVER_Error* (*RequestAddInput)(
      TRITONSERVER_InferenceRequest*, const char*, TRITONSERVER_DataType, const int64_t*,
      uint64_t);
  TRITONSERVER_Error* (*RequestAppendInputData)(
      TRITONSERVER_InferenceRequest*, const char*, const void*, size_t, TRITONSERVER_MemoryType,
      int64_t);
  TRITONSERVER_Error* (*RequestAddRequestedOutput)(TRITONSERVER_InferenceRequest*, const char*);
  TRITONSERVER_Error* (*RequestSetReleaseCallback)(
      TRITONSERVER_InferenceRequest*, RequestReleaseFn, void*);
  TRITONSERVER_Error* (*RequestSetResponseCallback)(
      TRITONSERVER_InferenceRequest*, TRITONSERVER_ResponseAllocator*, void*, ResponseCompleteFn,
      void*);
  TRITONSERVER_Error* (*RequestSetStringParameter)(
      TRITONSERVER_InferenceRequest*, const char*, const char*);
  TRITONSERVER_Error* (*RequestSetIntParameter)(
      TRITONSERVER_InferenceRequest*, const char*, int64_t);
  TRITONSERVER_Error* (*RequestSetBoolParameter)(TRITONSERVER_InferenceRequest*, const char*, bool);
  TRITONSERVER_Error* (*RequestSetDoubleParameter)(
      TRITONSERVER_InferenceRequest*, const char*, double);
  TRITONSERVER_Error* (*RequestCancel)(TRITONSERVER_InferenceRequest*);
  TRITONSERVER_Error* (*ResponseDelete)(TRITONSERVER_InferenceResponse*);
  TRITONSERVER_Error* (*ResponseError)(TRITONSERVER_InferenceResponse*);
  TRITONSERVER_Error* (*ResponseParameterCount)(TRITONSERVER_InferenceResponse*, uint32_t*);
  TRITONSERVER_Error* (*ResponseParameter)(
      TRITONSERVER_InferenceResponse*, uint32_t, const char**, TRITONSERVER_ParameterType*,
      const void**);
  TRITONSERVER_Error* (*ResponseOutputCount)(TRITONSERVER_InferenceResponse*, uint32_t*);
  TRITONSERVER_Error* (*ResponseOutput)(
      TRITONSERVER_InferenceResponse*, uint32_t, const char**, TRITONSERVER_DataType*,
      const int64_t**, uint64_t*, const void**, size_t*, TRITONSERVER_MemoryType*, int64_t*,
      void**);
  TRITONSERVER_Error* (*ServerInferAsync)(
      TRITONSERVER_Server*, TRITONSERVER_InferenceRequest*, TRITONSERVER_InferenceTrace*);
} api;

static struct {
  const char* name;
  void** slot;
} api_symbols[] = {
#define SYM(field, symbol) {#symbol, (void**)&api.field}
    SYM(ErrorNew, TRITONSERVER_ErrorNew),
    SYM(ErrorDelete, TRITONSERVER_ErrorDelete),
    SYM(ErrorCode, TRITONSERVER_ErrorCode),
    SYM(ErrorMessage, TRITONSERVER_ErrorMessage),
    SYM(DataTypeString, TRITONSERVER_DataTypeString),
    SYM(ResponseAllocatorNew, TRITONSERVER_ResponseAllocatorNew),
    SYM(RequestNew, TRITONSERVER_InferenceRequestNew),
    SYM(RequestDelete, TRITONSERVER_InferenceRequestDelete),
    SYM(RequestSetId, TRITONSERVER_InferenceRequestSetId),
    SYM(RequestSetFlags, TRITONSERVER_InferenceRequestSetFlags),
    SYM(RequestSetCorrelationId, TRITONSERVER_InferenceRequestSetCorrelationId),
    SYM(RequestSetCorrelationIdString, TRITONSERVER_InferenceRequestSetCorrelationIdString),
    SYM(RequestSetPriorityUInt64, TRITONSERVER_InferenceRequestSetPriorityUInt64),
    SYM(RequestSetTimeoutMicroseconds, TRITONSERVER_InferenceRequestSetTimeoutMicroseconds),
    SYM(RequestAddInput, TRITONSERVER_InferenceRequestAddInput),
    SYM(RequestAppendInputData, TRITONSERVER_InferenceRequestAppendInputData),
    SYM(RequestAddRequestedOutput, TRITONSERVER_InferenceRequestAddRequestedOutput),
    SYM(RequestSetReleaseCallback, TRITONSERVER_InferenceRequestSetReleaseCallback),
    SYM(RequestSetResponseCallback, TRITONSERVER_InferenceRequestSetResponseCallback),
    SYM(RequestSetStringParameter, TRITONSERVER_InferenceRequestSetStringParameter),
    SYM(RequestSetIntParameter, TRITONSERVER_InferenceRequestSetIntParameter),
    SYM(RequestSetBoolParameter, TRITONSERVER_InferenceRequestSetBoolParameter),
    SYM(RequestSetDoubleParameter, TRITONSERVER_InferenceRequestSetDoubleParameter),
    SYM(RequestCancel, TRITONSERVER_InferenceRequestCancel),
    SYM(ResponseDelete, TRITONSERVER_InferenceResponseDelete),
    SYM(ResponseError, TRITONSERVER_InferenceResponseError),
    SYM(ResponseParameterCount, TRITONSERVER_InferenceResponseParameterCount),
    SYM(ResponseParameter, TRITONSERVER_InferenceResponseParameter),
    SYM(ResponseOutputCount, TRITONSERVER_InferenceResponseOutputCount),
    SYM(ResponseOutput, TRITONSERVER_InferenceResponseOutput),
    SYM(ServerInferAsync, TRITONSERVER_ServerInferAsync),
#undef SYM
};

static TRITONSERVER_ResponseAllocator* allocator = NULL;
static PyObject* error_factory = NULL; /* (code, message) -> exception instance */

/* Counters for leak checks: objects alive right now. */
static atomic_long live_buffers;
static atomic_long live_requests;
static atomic_long live_events;

/* ---- output buffers ---- */

/* One malloc per output: this header, then the data. Ownership moves from the
 * response to an OutputBuffer object when the response is unpacked. */
typedef struct Block {
  size_t size;
  int taken;
  int pad_;
  int64_t align_[2]; /* a 32-byte header keeps the data 16-byte aligned */
} Block;

static inline void* block_data(Block* b) { return (void*)(b + 1); }

static Block* block_new(size_t size) {
  Block* b = malloc(sizeof(Block) + (size ? size : 1));
  if (b == NULL) return NULL;
  b->size = size;
  b->taken = 0;
  atomic_fetch_add(&live_buffers, 1);
  return b;
}

static void block_free(Block* b) {
  free(b);
  atomic_fetch_sub(&live_buffers, 1);
}

static TRITONSERVER_Error* alloc_fn(
    TRITONSERVER_ResponseAllocator* alloc, const char* name, size_t byte_size,
    TRITONSERVER_MemoryType mem_type, int64_t mem_type_id, void* userp, void** buffer,
    void** buffer_userp, TRITONSERVER_MemoryType* actual_mem_type, int64_t* actual_mem_type_id) {
  (void)alloc; (void)name; (void)mem_type; (void)mem_type_id; (void)userp;
  Block* b = block_new(byte_size);
  if (b == NULL) return api.ErrorNew(ERROR_INTERNAL, "out of memory for an output tensor");
  *buffer = block_data(b);
  *buffer_userp = b;
  *actual_mem_type = MEMORY_CPU;
  *actual_mem_type_id = 0;
  return NULL;
}

static TRITONSERVER_Error* release_fn(
    TRITONSERVER_ResponseAllocator* alloc, void* buffer, void* buffer_userp, size_t byte_size,
    TRITONSERVER_MemoryType mem_type, int64_t mem_type_id) {
  (void)alloc; (void)buffer; (void)byte_size; (void)mem_type; (void)mem_type_id;
  Block* b = buffer_userp;
  if (b != NULL && !b->taken) block_free(b);
  return NULL;
}

typedef struct {
  PyObject_HEAD
  Block* block;
} OutputBuffer;

static int OutputBuffer_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  OutputBuffer* ob = (OutputBuffer*)self;
  return PyBuffer_FillInfo(view, self, block_data(ob->block), (Py_ssize_t)ob->block->size, 0,
                           flags);
}

static void OutputBuffer_dealloc(PyObject* self) {
  OutputBuffer* ob = (OutputBuffer*)self;
  if (ob->block) block_free(ob->block);
  Py_TYPE(self)->tp_free(self);
}

static Py_ssize_t OutputBuffer_len(PyObject* self) {
  return (Py_ssize_t)((OutputBuffer*)self)->block->size;
}

static PyBufferProcs OutputBuffer_as_buffer = {OutputBuffer_getbuffer, NULL};
static PySequenceMethods OutputBuffer_as_sequence = {.sq_length = OutputBuffer_len};

static PyTypeObject OutputBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "app.triton._shim.OutputBuffer",
    .tp_basicsize = sizeof(OutputBuffer),
    .tp_dealloc = OutputBuffer_dealloc,
    .tp_as_buffer = &OutputBuffer_as_buffer,
    .tp_as_sequence = &OutputBuffer_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory of one output tensor, owned until this object dies.",
};

/* ---- completion queue ---- */

typedef struct Queue Queue;

typedef struct ReqCtx {
  atomic_int refs; /* the Pending object, the release event, the final response */
  atomic_int triton_refs; /* Triton's release and final response, both needed to delete */
  pthread_mutex_t lock;   /* guards request against cancel() racing its deletion */
  TRITONSERVER_InferenceRequest* request; /* NULL once deleted */
  Queue* queue;
  unsigned long long key;
  Py_ssize_t nbufs;
  Py_buffer* bufs; /* input buffers, held until release (zero-copy inputs) */
  struct ReqCtx* next_orphan;
} ReqCtx;

/* Contexts released while nobody drains their queue: their input buffers need
 * the GIL, which Triton's threads never take, so the next call that holds it
 * (submit, drain, stats) lets them go. */
static pthread_mutex_t orphan_lock = PTHREAD_MUTEX_INITIALIZER;
static ReqCtx* orphan_head = NULL;

typedef struct OutTensor {
  char* name;
  int dtype;
  uint64_t ndim;
  int64_t* shape;
  Block* block;
} OutTensor;

typedef struct OutParam {
  char* name;
  int type;
  int64_t i;
  double d;
  char* s;
  size_t slen;
} OutParam;

enum { EV_RESPONSE = 0, EV_RELEASE = 1 };

typedef struct Event {
  struct Event* next;
  ReqCtx* ctx;
  int kind;
  uint32_t flags;
  int err_code; /* -1: no error */
  char* err_msg;
  uint32_t n_out;
  OutTensor* outs;
  uint32_t n_params;
  OutParam* params;
} Event;

struct Queue {
  atomic_int refs; /* the CompletionQueue object and every in-flight request */
  pthread_mutex_t lock;
  Event* head;
  Event* tail;
  int signaled;
  int orphaned; /* its CompletionQueue (and event loop) is gone: nobody drains */
  int efd;
};

static void discard_event(Event* ev, int have_gil);

static void queue_decref(Queue* q) {
  if (atomic_fetch_sub(&q->refs, 1) == 1) {
    close(q->efd);
    pthread_mutex_destroy(&q->lock);
    free(q);
  }
}

static void queue_push(Queue* q, Event* ev) {
  int wake = 0;
  atomic_fetch_add(&live_events, 1);
  pthread_mutex_lock(&q->lock);
  if (q->orphaned) {
    pthread_mutex_unlock(&q->lock);
    discard_event(ev, 0);
    return;
  }
  ev->next = NULL;
  if (q->tail) q->tail->next = ev; else q->head = ev;
  q->tail = ev;
  if (!q->signaled) { q->signaled = 1; wake = 1; }
  pthread_mutex_unlock(&q->lock);
  if (wake) {
    uint64_t one = 1;
    ssize_t rc;
    do { rc = write(q->efd, &one, sizeof one); } while (rc < 0 && errno == EINTR);
  }
}

static void ctx_release_buffers(ReqCtx* ctx) {
  for (Py_ssize_t i = 0; i < ctx->nbufs; i++) PyBuffer_Release(&ctx->bufs[i]);
  ctx->nbufs = 0;
}

/* Delete the request once Triton released it AND sent the final response:
 * decoupled models release early, and cancel() must reach them until the end,
 * but a request kept any longer pins its model (unload would wait for it). */
static void ctx_triton_done(ReqCtx* ctx) {
  if (atomic_fetch_sub(&ctx->triton_refs, 1) != 1) return;
  pthread_mutex_lock(&ctx->lock);
  TRITONSERVER_InferenceRequest* req = ctx->request;
  ctx->request = NULL;
  pthread_mutex_unlock(&ctx->lock);
  if (req != NULL) {
    TRITONSERVER_Error* err = api.RequestDelete(req);
    if (err != NULL) api.ErrorDelete(err);
  }
}

static void ctx_decref(ReqCtx* ctx) {
  if (atomic_fetch_sub(&ctx->refs, 1) == 1) {
    if (ctx->request != NULL) { /* only when Triton never took the request */
      TRITONSERVER_Error* err = api.RequestDelete(ctx->request);
      if (err != NULL) api.ErrorDelete(err);
    }
    pthread_mutex_destroy(&ctx->lock);
    queue_decref(ctx->queue);
    PyMem_RawFree(ctx->bufs);
    free(ctx);
    atomic_fetch_sub(&live_requests, 1);
  }
}

static void event_free(Event* ev) {
  for (uint32_t i = 0; i < ev->n_out; i++) {
    free(ev->outs[i].name);
    free(ev->outs[i].shape);
    if (ev->outs[i].block) block_free(ev->outs[i].block);
  }
  free(ev->outs);
  for (uint32_t i = 0; i < ev->n_params; i++) {
    free(ev->params[i].name);
    free(ev->params[i].s);
  }
  free(ev->params);
  free(ev->err_msg);
  free(ev);
  atomic_fetch_sub(&live_events, 1);
}

static void event_set_error(Event* ev, TRITONSERVER_Error* err) {
  ev->err_code = api.ErrorCode(err);
  ev->err_msg = strdup(api.ErrorMessage(err));
}

/* Runs on a Triton thread: unpack the response so the loop thread never calls Triton. */
static void unpack_response(Event* ev, TRITONSERVER_InferenceResponse* resp) {
  TRITONSERVER_Error* err = api.ResponseError(resp); /* owned by the response */
  if (err != NULL) { event_set_error(ev, err); return; }

  uint32_t count = 0;
  err = api.ResponseOutputCount(resp, &count);
  if (err != NULL) { event_set_error(ev, err); api.ErrorDelete(err); return; }
  ev->outs = calloc(count ? count : 1, sizeof(OutTensor));
  for (uint32_t i = 0; i < count; i++) {
    const char* name; TRITONSERVER_DataType dtype; const int64_t* shape; uint64_t ndim;
    const void* base; size_t size; TRITONSERVER_MemoryType mtype; int64_t mtype_id; void* userp;
    err = api.ResponseOutput(resp, i, &name, &dtype, &shape, &ndim, &base, &size, &mtype,
                             &mtype_id, &userp);
    if (err != NULL) { event_set_error(ev, err); api.ErrorDelete(err); return; }
    OutTensor* out = &ev->outs[ev->n_out++];
    out->name = strdup(name);
    out->dtype = dtype;
    out->ndim = ndim;
    out->shape = malloc(sizeof(int64_t) * (ndim ? ndim : 1));
    memcpy(out->shape, shape, sizeof(int64_t) * ndim);
    Block* b = userp;
    if (b != NULL && !b->taken && block_data(b) == base && b->size >= size && mtype == MEMORY_CPU) {
      b->taken = 1; /* steal: release_fn will leave it alone */
      b->size = size;
      out->block = b;
    } else {
      /* Memory we did not allocate (or already handed out): copy it. */
      out->block = block_new(size);
      if (out->block && size) memcpy(block_data(out->block), base, size);
    }
  }

  err = api.ResponseParameterCount(resp, &count);
  if (err != NULL) { api.ErrorDelete(err); return; }
  ev->params = calloc(count ? count : 1, sizeof(OutParam));
  for (uint32_t i = 0; i < count; i++) {
    const char* name; TRITONSERVER_ParameterType type; const void* value;
    err = api.ResponseParameter(resp, i, &name, &type, &value);
    if (err != NULL) { api.ErrorDelete(err); continue; }
    OutParam* p = &ev->params[ev->n_params++];
    p->name = strdup(name);
    p->type = type;
    switch (type) {
      case PARAM_STRING: p->s = strdup((const char*)value); p->slen = strlen(p->s); break;
      case PARAM_INT: p->i = *(const int64_t*)value; break;
      case PARAM_BOOL: p->i = *(const bool*)value; break;
      case PARAM_DOUBLE: p->d = *(const double*)value; break;
      default: p->type = -1; break;
    }
  }
}

static void response_complete(TRITONSERVER_InferenceResponse* resp, const uint32_t flags,
                              void* userp) {
  ReqCtx* ctx = userp;
  Event* ev = calloc(1, sizeof(Event));
  ev->ctx = ctx;
  ev->kind = EV_RESPONSE;
  ev->flags = flags;
  ev->err_code = -1;
  if (resp != NULL) {
    unpack_response(ev, resp);
    TRITONSERVER_Error* err = api.ResponseDelete(resp);
    if (err != NULL) api.ErrorDelete(err);
  }
  if (flags & RESPONSE_COMPLETE_FINAL) ctx_triton_done(ctx);
  queue_push(ctx->queue, ev);
}

static void request_release(TRITONSERVER_InferenceRequest* req, const uint32_t flags, void* userp) {
  ReqCtx* ctx = userp;
  (void)req;
  if (!(flags & REQUEST_RELEASE_ALL)) return;
  ctx_triton_done(ctx);
  Event* ev = calloc(1, sizeof(Event));
  ev->ctx = ctx;
  ev->kind = EV_RELEASE;
  ev->err_code = -1;
  queue_push(ctx->queue, ev);
}

typedef struct {
  PyObject_HEAD
  Queue* q;
} CompletionQueue;

static int CompletionQueue_init(PyObject* self, PyObject* args, PyObject* kwds) {
  (void)args; (void)kwds;
  CompletionQueue* cq = (CompletionQueue*)self;
  Queue* q = calloc(1, sizeof(Queue));
  if (q == NULL) { PyErr_NoMemory(); return -1; }
  q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (q->efd < 0) { free(q); PyErr_SetFromErrno(PyExc_OSError); return -1; }
  pthread_mutex_init(&q->lock, NULL);
  atomic_store(&q->refs, 1);
  cq->q = q;
  return 0;
}

/* Free an event nobody will drain, with what it owns: requests whose loop
 * ended before Triton answered must not leak their inputs and outputs. */
static void discard_event(Event* ev, int have_gil) {
  ReqCtx* ctx = ev->ctx;
  if (ev->kind == EV_RELEASE) {
    if (have_gil) {
      ctx_release_buffers(ctx);
      ctx_decref(ctx);
    } else {
      pthread_mutex_lock(&orphan_lock);
      ctx->next_orphan = orphan_head;
      orphan_head = ctx;
      pthread_mutex_unlock(&orphan_lock);
    }
  } else if (ev->flags & RESPONSE_COMPLETE_FINAL) {
    ctx_decref(ctx);
  }
  event_free(ev);
}

static void collect_orphans(void) { /* the GIL is held */
  pthread_mutex_lock(&orphan_lock);
  ReqCtx* ctx = orphan_head;
  orphan_head = NULL;
  pthread_mutex_unlock(&orphan_lock);
  while (ctx != NULL) {
    ReqCtx* next = ctx->next_orphan;
    ctx_release_buffers(ctx);
    ctx_decref(ctx);
    ctx = next;
  }
}

static void CompletionQueue_dealloc(PyObject* self) {
  CompletionQueue* cq = (CompletionQueue*)self;
  Queue* q = cq->q;
  if (q) {
    pthread_mutex_lock(&q->lock);
    q->orphaned = 1;
    Event* ev = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->lock);
    while (ev != NULL) {
      Event* next = ev->next;
      discard_event(ev, 1);
      ev = next;
    }
    queue_decref(q);
  }
  Py_TYPE(self)->tp_free(self);
}

static PyObject* CompletionQueue_fileno(PyObject* self, PyObject* unused) {
  (void)unused;
  return PyLong_FromLong(((CompletionQueue*)self)->q->efd);
}

static PyObject* build_response_tuple(Event* ev) {
  PyObject* error = Py_None;
  PyObject* outputs = NULL;
  PyObject* params = NULL;
  Py_INCREF(Py_None);
  if (ev->err_code >= 0) {
    Py_DECREF(Py_None);
    error = Py_BuildValue("(is)", ev->err_code, ev->err_msg ? ev->err_msg : "");
    if (error == NULL) return NULL;
  }
  outputs = PyList_New(ev->n_out);
  if (outputs == NULL) goto fail;
  for (uint32_t i = 0; i < ev->n_out; i++) {
    OutTensor* out = &ev->outs[i];
    PyObject* shape = PyTuple_New((Py_ssize_t)out->ndim);
    if (shape == NULL) goto fail;
    for (uint64_t d = 0; d < out->ndim; d++)
      PyTuple_SET_ITEM(shape, (Py_ssize_t)d, PyLong_FromLongLong(out->shape[d]));
    OutputBuffer* ob = PyObject_New(OutputBuffer, &OutputBufferType);
    if (ob == NULL) { Py_DECREF(shape); goto fail; }
    ob->block = out->block;
    out->block = NULL; /* the OutputBuffer owns it now */
    PyObject* item = Py_BuildValue("(siNN)", out->name, out->dtype, shape, (PyObject*)ob);
    if (item == NULL) goto fail;
    PyList_SET_ITEM(outputs, i, item);
  }
  params = PyDict_New();
  if (params == NULL) goto fail;
  for (uint32_t i = 0; i < ev->n_params; i++) {
    OutParam* p = &ev->params[i];
    PyObject* value = NULL;
    switch (p->type) {
      case PARAM_STRING: value = PyUnicode_DecodeUTF8(p->s, (Py_ssize_t)p->slen, "replace"); break;
      case PARAM_INT: value = PyLong_FromLongLong(p->i); break;
      case PARAM_BOOL: value = PyBool_FromLong((long)p->i); break;
      case PARAM_DOUBLE: value = PyFloat_FromDouble(p->d); break;
      default: continue;
    }
    if (value == NULL || PyDict_SetItemString(params, p->name, value) < 0) {
      Py_XDECREF(value);
      goto fail;
    }
    Py_DECREF(value);
  }
  return Py_BuildValue("(KONNN)", ev->ctx->key,
                       (ev->flags & RESPONSE_COMPLETE_FINAL) ? Py_True : Py_False, error, outputs,
                       params);
fail:
  Py_XDECREF(error);
  Py_XDECREF(outputs);
  Py_XDECREF(params);
  return NULL;
}

/* On the loop thread: take every queued event. Returns a list of
 * (key, final, error|None, [(name, dtype, shape, OutputBuffer)], {param: value}). */
static PyObject* CompletionQueue_drain(PyObject* self, PyObject* unused) {
  (void)unused;
  Queue* q = ((CompletionQueue*)self)->q;
  collect_orphans();
  uint64_t counter;
  ssize_t rc;
  do { rc = read(q->efd, &counter, sizeof counter); } while (rc < 0 && errno == EINTR);
  pthread_mutex_lock(&q->lock);
  Event* ev = q->head;
  q->head = q->tail = NULL;
  q->signaled = 0;
  pthread_mutex_unlock(&q->lock);

  PyObject* result = PyList_New(0);
  while (ev != NULL) {
    Event* next = ev->next;
    ReqCtx* ctx = ev->ctx;
    if (ev->kind == EV_RELEASE) {
      ctx_release_buffers(ctx);
      ctx_decref(ctx);
    } else {
      if (result != NULL) {
        PyObject* item = build_response_tuple(ev);
        if (item == NULL || PyList_Append(result, item) < 0) Py_CLEAR(result);
        Py_XDECREF(item);
      }
      if (ev->flags & RESPONSE_COMPLETE_FINAL) ctx_decref(ctx);
    }
    event_free(ev);
    ev = next;
  }
  return result;
}

static PyMethodDef CompletionQueue_methods[] = {
    {"fileno", CompletionQueue_fileno, METH_NOARGS, "The eventfd that becomes readable."},
    {"drain", CompletionQueue_drain, METH_NOARGS, "Take every completed response."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CompletionQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "app.triton._shim.CompletionQueue",
    .tp_basicsize = sizeof(CompletionQueue),
    .tp_dealloc = CompletionQueue_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = CompletionQueue_init,
    .tp_methods = CompletionQueue_methods,
    .tp_doc = "Responses completed on Triton's threads, waiting for the loop.",
};

/* ---- a request in flight ---- */

typedef struct {
  PyObject_HEAD
  ReqCtx* ctx;
} Pending;

static void Pending_dealloc(PyObject* self) {
  Pending* p = (Pending*)self;
  if (p->ctx) ctx_decref(p->ctx);
  Py_TYPE(self)->tp_free(self);
}

static int raise_triton(TRITONSERVER_Error* err) {
  int code = api.ErrorCode(err);
  const char* msg = api.ErrorMessage(err);
  PyObject* exc = NULL;
  if (error_factory != NULL) exc = PyObject_CallFunction(error_factory, "is", code, msg);
  api.ErrorDelete(err);
  if (exc == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, msg);
    return -1;
  }
  PyErr_SetObject((PyObject*)Py_TYPE(exc), exc);
  Py_DECREF(exc);
  return -1;
}

static PyObject* Pending_cancel(PyObject* self, PyObject* unused) {
  (void)unused;
  ReqCtx* ctx = ((Pending*)self)->ctx;
  TRITONSERVER_Error* err = NULL;
  pthread_mutex_lock(&ctx->lock);
  if (ctx->request != NULL) err = api.RequestCancel(ctx->request);
  pthread_mutex_unlock(&ctx->lock);
  if (err != NULL) { raise_triton(err); return NULL; }
  Py_RETURN_NONE;
}

static PyMethodDef Pending_methods[] = {
    {"cancel", Pending_cancel, METH_NOARGS, "Ask Triton to cancel the request (best effort)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "app.triton._shim.Pending",
    .tp_basicsize = sizeof(Pending),
    .tp_dealloc = Pending_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = Pending_methods,
    .tp_doc = "A submitted request; cancel() reaches Triton while it runs.",
};

/* ---- module functions ---- */

#define CHECK(call)                       \
  do {                                    \
    TRITONSERVER_Error* err_ = (call);    \
    if (err_ != NULL) {                   \
      raise_triton(err_);                 \
      goto fail;                          \
    }                                     \
  } while (0)

static int invalid(const char* fmt, const char* what) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, what);
  return raise_triton(api.ErrorNew(ERROR_INVALID_ARG, msg));
}

static int set_parameter(TRITONSERVER_InferenceRequest* req, PyObject* item) {
  PyObject* key;
  PyObject* value;
  if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
    PyErr_SetString(PyExc_TypeError, "parameters must be (name, value) tuples");
    return -1;
  }
  key = PyTuple_GET_ITEM(item, 0);
  value = PyTuple_GET_ITEM(item, 1);
  const char* name = PyUnicode_AsUTF8(key);
  if (name == NULL) return -1;
  TRITONSERVER_Error* err;
  if (PyBool_Check(value)) {
    err = api.RequestSetBoolParameter(req, name, value == Py_True);
  } else if (PyLong_Check(value)) {
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    err = api.RequestSetIntParameter(req, name, v);
  } else if (PyFloat_Check(value)) {
    err = api.RequestSetDoubleParameter(req, name, PyFloat_AS_DOUBLE(value));
  } else if (PyUnicode_Check(value)) {
    const char* s = PyUnicode_AsUTF8(value);
    if (s == NULL) return -1;
    err = api.RequestSetStringParameter(req, name, s);
  } else {
    return invalid("parameter '%s' must be a str, int, float or bool", name);
  }
  if (err != NULL) return raise_triton(err);
  return 0;
}

static PyObject* shim_submit(PyObject* module, PyObject* args) {
  (void)module;
  unsigned long long server_addr, key, priority, timeout_us;
  PyObject* queue_obj;
  const char* model_name;
  long long model_version;
  const char* request_id;
  PyObject* inputs;
  PyObject* outputs;
  PyObject* params;
  PyObject* correlation_id;
  unsigned int flags;
  if (!PyArg_ParseTuple(args, "KO!KsLzOOOKKOI", &server_addr, &CompletionQueueType, &queue_obj,
                        &key, &model_name, &model_version, &request_id, &inputs, &outputs,
                        &params, &priority, &timeout_us, &correlation_id, &flags))
    return NULL;
  if (allocator == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "the shim is not bound to libtritonserver");
    return NULL;
  }
  collect_orphans();
  if (!PyList_Check(inputs) || (outputs != Py_None && !PyList_Check(outputs)) ||
      (params != Py_None && !PyList_Check(params))) {
    PyErr_SetString(PyExc_TypeError, "inputs, outputs and parameters must be lists");
    return NULL;
  }
  Queue* q = ((CompletionQueue*)queue_obj)->q;
  TRITONSERVER_InferenceRequest* req = NULL;
  Py_ssize_t n_inputs = PyList_GET_SIZE(inputs);

  ReqCtx* ctx = calloc(1, sizeof(ReqCtx));
  if (ctx == NULL) return PyErr_NoMemory();
  ctx->bufs = PyMem_RawCalloc(n_inputs ? (size_t)n_inputs : 1, sizeof(Py_buffer));
  if (ctx->bufs == NULL) { free(ctx); return PyErr_NoMemory(); }
  pthread_mutex_init(&ctx->lock, NULL);
  ctx->key = key;
  ctx->queue = q;

  CHECK(api.RequestNew(&req, (TRITONSERVER_Server*)(uintptr_t)server_addr, model_name,
                       model_version));
  if (request_id != NULL && request_id[0] != '\0') CHECK(api.RequestSetId(req, request_id));
  if (flags) CHECK(api.RequestSetFlags(req, flags));
  if (correlation_id != Py_None) {
    if (PyUnicode_Check(correlation_id)) {
      const char* s = PyUnicode_AsUTF8(correlation_id);
      if (s == NULL) goto fail;
      CHECK(api.RequestSetCorrelationIdString(req, s));
    } else {
      unsigned long long cid = PyLong_AsUnsignedLongLong(correlation_id);
      if (PyErr_Occurred()) goto fail;
      CHECK(api.RequestSetCorrelationId(req, cid));
    }
  }
  if (priority) CHECK(api.RequestSetPriorityUInt64(req, priority));
  if (timeout_us) CHECK(api.RequestSetTimeoutMicroseconds(req, timeout_us));

  for (Py_ssize_t i = 0; i < n_inputs; i++) {
    PyObject* item = PyList_GET_ITEM(inputs, i);
    const char* name;
    int dtype;
    PyObject* shape;
    PyObject* buffer;
    if (!PyArg_ParseTuple(item, "siO!O", &name, &dtype, &PyTuple_Type, &shape, &buffer)) goto fail;
    Py_ssize_t ndim = PyTuple_GET_SIZE(shape);
    int64_t dims[64];
    if (ndim > 64) { invalid("input '%s' has more than 64 dimensions", name); goto fail; }
    for (Py_ssize_t d = 0; d < ndim; d++) {
      dims[d] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, d));
      if (dims[d] == -1 && PyErr_Occurred()) goto fail;
    }
    if (PyObject_GetBuffer(buffer, &ctx->bufs[i], PyBUF_C_CONTIGUOUS) < 0) goto fail;
    ctx->nbufs = i + 1;
    CHECK(api.RequestAddInput(req, name, dtype, dims, (uint64_t)ndim));
    CHECK(api.RequestAppendInputData(req, name, ctx->bufs[i].buf, (size_t)ctx->bufs[i].len,
                                     MEMORY_CPU, 0));
  }
  if (outputs != Py_None) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(outputs); i++) {
      const char* name = PyUnicode_AsUTF8(PyList_GET_ITEM(outputs, i));
      if (name == NULL) goto fail;
      CHECK(api.RequestAddRequestedOutput(req, name));
    }
  }
  if (params != Py_None) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(params); i++)
      if (set_parameter(req, PyList_GET_ITEM(params, i)) < 0) goto fail;
  }
  CHECK(api.RequestSetReleaseCallback(req, request_release, ctx));
  CHECK(api.RequestSetResponseCallback(req, allocator, NULL, response_complete, ctx));

  Pending* pending = PyObject_New(Pending, &PendingType);
  if (pending == NULL) goto fail;
  pending->ctx = NULL;
  ctx->request = req;
  atomic_store(&ctx->refs, 3);
  atomic_store(&ctx->triton_refs, 2);
  atomic_fetch_add(&q->refs, 1);
  atomic_fetch_add(&live_requests, 1);

  /* The GIL stays held: this only enqueues (microseconds), and releasing it
   * would make every submit wait a whole switch interval for it to come back
   * when another Python thread is busy. Nothing Triton calls takes the GIL. */
  TRITONSERVER_Error* err =
      api.ServerInferAsync((TRITONSERVER_Server*)(uintptr_t)server_addr, req, NULL);
  if (err != NULL) {
    /* Triton did not take the request: no callback will come. */
    atomic_store(&ctx->refs, 1);
    pending->ctx = ctx; /* freed, with the request, with the Pending object below */
    ctx_release_buffers(ctx);
    Py_DECREF(pending);
    raise_triton(err);
    return NULL;
  }
  pending->ctx = ctx;
  return (PyObject*)pending;

fail:
  if (req != NULL) {
    TRITONSERVER_Error* err = api.RequestDelete(req);
    if (err != NULL) api.ErrorDelete(err);
  }
  ctx_release_buffers(ctx);
  pthread_mutex_destroy(&ctx->lock);
  PyMem_RawFree(ctx->bufs);
  free(ctx);
  return NULL;
}

static PyObject* shim_bind(PyObject* module, PyObject* args) {
  (void)module;
  unsigned long long handle_addr;
  PyObject* factory;
  if (!PyArg_ParseTuple(args, "KO", &handle_addr, &factory)) return NULL;
  void* handle = (void*)(uintptr_t)handle_addr;
  for (size_t i = 0; i < sizeof api_symbols / sizeof api_symbols[0]; i++) {
    void* fn = dlsym(handle, api_symbols[i].name);
    if (fn == NULL) {
      PyErr_Format(PyExc_OSError, "libtritonserver has no symbol %s", api_symbols[i].name);
      return NULL;
    }
    *api_symbols[i].slot = fn;
  }
  Py_XSETREF(error_factory, Py_NewRef(factory));
  if (allocator == NULL) {
    TRITONSERVER_Error* err = api.ResponseAllocatorNew(&allocator, alloc_fn, release_fn, NULL);
    if (err != NULL) { raise_triton(err); return NULL; }
  }
  Py_RETURN_NONE;
}

static PyObject* shim_stats(PyObject* module, PyObject* unused) {
  (void)module; (void)unused;
  collect_orphans();
  return Py_BuildValue("{s:l,s:l,s:l}", "live_buffers", atomic_load(&live_buffers),
                       "live_requests", atomic_load(&live_requests), "live_events",
                       atomic_load(&live_events));
}

static PyMethodDef shim_methods[] = {
    {"bind", shim_bind, METH_VARARGS, "bind(dl_handle, error_factory): resolve Triton's symbols."},
    {"submit", shim_submit, METH_VARARGS,
     "submit(server, queue, key, model, version, request_id, inputs, outputs, parameters, "
     "priority, timeout_us, correlation_id, flags) -> Pending"},
    {"stats", shim_stats, METH_NOARGS, "Objects alive in the shim (for leak checks)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef shim_module = {
    PyModuleDef_HEAD_INIT, "_shim", "Compiled hot path of the in-process Triton engine.", -1,
    shim_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__shim(void) {
  if (PyType_Ready(&OutputBufferType) < 0 || PyType_Ready(&CompletionQueueType) < 0 ||
      PyType_Ready(&PendingType) < 0)
    return NULL;
  PyObject* m = PyModule_Create(&shim_module);
  if (m == NULL) return NULL;
  if (PyModule_AddObjectRef(m, "OutputBuffer", (PyObject*)&OutputBufferType) < 0 ||
      PyModule_AddObjectRef(m, "CompletionQueue", (PyObject*)&CompletionQueueType) < 0 ||
      PyModule_AddObjectRef(m, "Pending", (PyObject*)&PendingType) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
