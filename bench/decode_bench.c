/* Decode speed of a model compiled by sq-compile, through its C API
 * (include/sq/Runtime/sq_runtime.h), for bench/decode_ratios.sh.
 *
 *   decode_bench MODEL.so [--prompt 16] [--decode 32] [--repeats 3] [--json]
 *
 * dlopen()s MODEL.so, looks the API up with dlsym (so this program links
 * against nothing of SQ's), opens the model (weights: MODEL.so.weights),
 * creates a context of prompt + decode tokens, and per repeat: resets the
 * context, prefills --prompt seeded token ids, then runs --decode single-token
 * sq_decode steps, each feeding back the argmax of the previous logits (greedy,
 * as llama.cpp's loop in bench/llama_cpp_runner.mjs does). Prints the median
 * decode tokens/s and ms/token, prefill tokens/s, and the size of the weights
 * sidecar (a proxy for the bytes read per decoded token), the seconds
 * sq_model_open took and the process's peak resident memory (getrusage
 * ru_maxrss: the weights, the context and the runtime's buffers, as the
 * kernel counted them). --prompt N makes the decode steps run after an
 * N-token context (decode ms/token at context N). Kernel threads:
 * SQ_NUM_THREADS (the runtime's default is the core count).
 *
 * Build: cc -O2 -I include bench/decode_bench.c -o decode_bench -ldl
 */
#define _GNU_SOURCE
#include "sq/Runtime/sq_runtime.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
  sq_status (*error_code)(const sq_error *);
  const char *(*error_message)(const sq_error *);
  void (*error_free)(sq_error *);
  int32_t (*abi_version)(void);
  sq_model *(*model_open)(const char *, sq_error **);
  void (*model_free)(sq_model *);
  void (*model_get_config)(const sq_model *, sq_model_config *);
  int64_t (*model_vocab_size)(const sq_model *);
  const char *(*model_description)(const sq_model *);
  sq_context *(*context_create)(sq_model *, int64_t, int64_t, sq_error **);
  void (*context_free)(sq_context *);
  void (*context_reset)(sq_context *);
  int64_t (*context_length)(const sq_context *);
  sq_status (*prefill)(sq_context *, const int32_t *, int64_t, int64_t, float *, sq_error **);
  sq_status (*decode)(sq_context *, const int32_t *, float *, sq_error **);
} sq_api;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, n, sizeof(double), cmp_double);
  return v[n / 2];
}

static int32_t argmax(const float *x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return (int32_t)best;
}

static int fail(const sq_api *api, const char *what, sq_error *err) {
  fprintf(stderr, "decode_bench: %s: %s\n", what, err ? api->error_message(err) : "failed");
  if (err) api->error_free(err);
  return 1;
}

int main(int argc, char **argv) {
  const char *path = NULL;
  int prompt = 16, decode = 32, repeats = 3, json = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--decode") && i + 1 < argc) decode = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--json")) json = 1;
    else if (argv[i][0] != '-' && !path) path = argv[i];
    else {
      fprintf(stderr, "usage: %s MODEL.so [--prompt N] [--decode N] [--repeats N] [--json]\n",
              argv[0]);
      return 2;
    }
  }
  if (!path || prompt < 1 || decode < 1 || repeats < 1) {
    fprintf(stderr, "usage: %s MODEL.so [--prompt N] [--decode N] [--repeats N] [--json]\n",
            argv[0]);
    return 2;
  }
  /* dlopen needs a slash to not search the library path. */
  char *so = malloc(strlen(path) + 3);
  sprintf(so, "%s%s", strchr(path, '/') ? "" : "./", path);
  void *lib = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "decode_bench: dlopen %s: %s\n", so, dlerror());
    return 1;
  }
  sq_api api;
  struct { void **slot; const char *name; } syms[] = {
      {(void **)&api.error_code, "sq_error_code"},
      {(void **)&api.error_message, "sq_error_message"},
      {(void **)&api.error_free, "sq_error_free"},
      {(void **)&api.abi_version, "sq_runtime_abi_version"},
      {(void **)&api.model_open, "sq_model_open"},
      {(void **)&api.model_free, "sq_model_free"},
      {(void **)&api.model_get_config, "sq_model_get_config"},
      {(void **)&api.model_vocab_size, "sq_model_vocab_size"},
      {(void **)&api.model_description, "sq_model_description"},
      {(void **)&api.context_create, "sq_context_create"},
      {(void **)&api.context_free, "sq_context_free"},
      {(void **)&api.context_reset, "sq_context_reset"},
      {(void **)&api.context_length, "sq_context_length"},
      {(void **)&api.prefill, "sq_prefill"},
      {(void **)&api.decode, "sq_decode"},
  };
  for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); ++i) {
    *syms[i].slot = dlsym(lib, syms[i].name);
    if (!*syms[i].slot) {
      fprintf(stderr, "decode_bench: %s does not export %s\n", so, syms[i].name);
      return 1;
    }
  }
  if (api.abi_version() != SQ_RUNTIME_ABI_VERSION) {
    fprintf(stderr, "decode_bench: %s has ABI version %d, this program %d\n", so,
            api.abi_version(), SQ_RUNTIME_ABI_VERSION);
    return 1;
  }
  sq_error *err = NULL;
  double t0 = now();
  sq_model *m = api.model_open(so, &err);
  if (!m) return fail(&api, "sq_model_open", err);
  double open_s = now() - t0;
  sq_model_config cfg;
  api.model_get_config(m, &cfg);
  int64_t vocab = api.model_vocab_size(m);
  sq_context *c = api.context_create(m, prompt + decode + 1, 1, &err);
  if (!c) return fail(&api, "sq_context_create", err);
  float *logits = malloc(sizeof(float) * vocab);
  int32_t *tokens = malloc(sizeof(int32_t) * prompt);
  unsigned seed = 1;
  for (int i = 0; i < prompt; ++i) {
    seed = seed * 1103515245u + 12345u;
    tokens[i] = (int32_t)((seed >> 8) % (vocab < 256 ? vocab : 256));
  }
  if (cfg.bos_token_id >= 0) tokens[0] = cfg.bos_token_id;
  double *pre = calloc(repeats, sizeof(double)), *dec = calloc(repeats, sizeof(double));
  for (int r = 0; r < repeats; ++r) {
    api.context_reset(c);
    t0 = now();
    if (api.prefill(c, tokens, 1, prompt, logits, &err) != SQ_OK)
      return fail(&api, "sq_prefill", err);
    pre[r] = now() - t0;
    t0 = now();
    for (int i = 0; i < decode; ++i) {
      int32_t next = argmax(logits, vocab);
      if (api.decode(c, &next, logits, &err) != SQ_OK) return fail(&api, "sq_decode", err);
    }
    dec[r] = now() - t0;
    if (api.context_length(c) != prompt + decode) {
      fprintf(stderr, "decode_bench: context holds %lld tokens, expected %d\n",
              (long long)api.context_length(c), prompt + decode);
      return 1;
    }
  }
  double d = median(dec, repeats), p = median(pre, repeats);
  char *wpath = malloc(strlen(so) + 16);
  sprintf(wpath, "%s.weights", so);
  struct stat st;
  long long wbytes = stat(wpath, &st) == 0 ? (long long)st.st_size : -1;
  const char *threads = getenv("SQ_NUM_THREADS");
  struct rusage ru;
  long long peak_rss = getrusage(RUSAGE_SELF, &ru) == 0 ? (long long)ru.ru_maxrss * 1024 : -1;
  if (json) {
    printf("{\"decode_tokens_per_s\": %.4f, \"ms_per_token\": %.4f, \"prefill_tokens_per_s\": %.4f, "
           "\"weights_file_bytes\": %lld, \"layers\": %lld, \"vocab\": %lld, \"open_s\": %.3f, "
           "\"peak_rss_bytes\": %lld, "
           "\"threads\": \"%s\", \"prompt\": %d, \"decode\": %d, \"repeats\": %d, "
           "\"description\": \"",
           decode / d, 1000 * d / decode, prompt / p, wbytes, (long long)cfg.num_layers,
           (long long)vocab, open_s, peak_rss, threads ? threads : "default", prompt, decode, repeats);
    for (const char *s = api.model_description(m); s && *s; ++s)
      if (*s == '"' || *s == '\\') printf("\\%c", *s);
      else if ((unsigned char)*s >= 0x20) putchar(*s);
    printf("\"}\n");
  } else {
    printf("model        %s\n", so);
    printf("description  %s\n", api.model_description(m));
    printf("shape        %lld layers, hidden %lld, ffn %lld, vocab %lld\n",
           (long long)cfg.num_layers, (long long)cfg.hidden_size, (long long)cfg.intermediate_size,
           (long long)vocab);
    printf("weights      %lld bytes (%s)\n", wbytes, wpath);
    printf("open         %.3f s\n", open_s);
    printf("peak RSS     %.1f MB\n", peak_rss / 1e6);
    printf("prefill      %d tokens: %.1f tokens/s\n", prompt, prompt / p);
    printf("decode       %d tokens after %d: %.2f tokens/s, %.2f ms/token (median of %d)\n", decode,
           prompt, decode / d, 1000 * d / decode, repeats);
  }
  api.context_free(c);
  api.model_free(m);
  free(logits); free(tokens); free(pre); free(dec); free(wpath); free(so);
  return 0;
}
