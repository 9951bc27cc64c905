/*
What the language-model trainers share: their flags (llm.c's letters where
llm.c has one), the learning-rate schedule, global-norm clipping plus AdamW
over a flat buffer of tensors, sampling a token, loading the token data and
its vocabulary, and checkpoint bookkeeping. Each train_*.cu keeps its own
model and main loop, so it still reads top to bottom.
*/
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>
#include "cuda_common.h"
#include "adamw.cuh"
#include "checkpoint.h"
#include "dataloader.h"
#include "logger.h"
#include "utils.h"

typedef struct {
    const char* train_path;
    const char* val_path;
    const char* vocab_path;
    const char* init_path;   // -e: model file to start from
    const char* out_dir;     // -o
    int checkpoint_every;    // -n
    int resume;              // -y
    int B, T, max_steps, warmup;
    float lr, final_frac, weight_decay, grad_clip;
    int val_every, val_batches, sample_every, gen_tokens, seed;
    int L, C, H, F;          // model shape flags (each model uses what it has)
    int generate_only;       // -G: sample from the model (-e or -y) and exit
    const char* prompt;      // -P: text to start samples from (default: a newline)
    float temperature;       // -a
    int top_k;               // -K: sample among the k likeliest tokens, 0 = all
} TrainConfig;

// the LM trainers' defaults: the seed configuration (model shape set by each trainer)
static TrainConfig default_lm_config() {
    TrainConfig c;
    memset(&c, 0, sizeof(c));
    c.train_path = "data/tinyshakespeare_train.bin";
    c.val_path = "data/tinyshakespeare_val.bin";
    c.vocab_path = "data/tinyshakespeare_vocab.bin";
    c.B = 64; c.T = 256; c.max_steps = 5000;
    c.lr = 1e-3f; c.final_frac = 0.1f; c.weight_decay = 1e-5f; c.grad_clip = 1.0f;
    c.val_every = 250; c.val_batches = 20; c.gen_tokens = 256; c.seed = 1337;
    c.temperature = 1.0f;
    return c;
}

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
} AdamWConfig;

static void train_usage(const char* program, const TrainConfig* d, const char* model_flags, int status) {
    fprintf(status ? stderr : stdout,
        "Usage: %s [options]\n"
        "  -i <path>   train tokens          (default %s)\n"
        "  -j <path>   val tokens            (default %s)\n"
        "  -k <path>   vocabulary            (default %s)\n"
        "  -e <path>   initialize from a model file instead of random\n"
        "  -o <dir>    output directory: checkpoints and the final model.bin\n"
        "  -n <int>    checkpoint every n steps, with -o (default 0: only at the end)\n"
        "  -y <0|1>    resume from the newest checkpoint in -o (default 0)\n"
        "  -b <int>    batch size B (default %d)\n"
        "  -t <int>    sequence length T (default %d)\n"
        "  -x <int>    training steps (default %d)\n"
        "  -l <float>  learning rate (default %g)\n"
        "  -u <int>    warmup steps (default %d)\n"
        "  -q <float>  final learning rate as a fraction of -l, cosine decay (default %g)\n"
        "  -c <float>  weight decay (default %g)\n"
        "  -p <float>  gradient norm clip, 0 = none (default %g)\n"
        "  -v <int>    validate every v steps, 0 = only at the end (default %d)\n"
        "  -m <int>    validation batches, 0 = all (default %d)\n"
        "  -s <int>    sample every s steps, 0 = only at the end (default %d)\n"
        "  -g <int>    tokens to sample, 0 = none (default %d)\n"
        "  -r <int>    random seed (default %d)\n"
        "  -G <0|1>    only generate text from the model of -e or -y, then exit (default 0)\n"
        "  -P <text>   prompt for samples (default a newline)\n"
        "  -a <float>  sampling temperature (default %g)\n"
        "  -K <int>    sample among the K likeliest tokens, 0 = all (default %d)\n"
        "%s"
        "  -h          this help\n",
        program, d->train_path, d->val_path, d->vocab_path, d->B, d->T, d->max_steps, d->lr, d->warmup,
        d->final_frac, d->weight_decay, d->grad_clip, d->val_every, d->val_batches, d->sample_every,
        d->gen_tokens, d->seed, d->temperature, d->top_k, model_flags);
    exit(status);
}

// parses "-x value" pairs over the defaults in c; model_flags is the help text
// of -L/-C/-H/-F for this model, allowed names the shape letters it takes
static void parse_train_flags(int argc, char** argv, TrainConfig* c, const char* model_flags, const char* allowed) {
    TrainConfig defaults = *c;
    for (int i = 1; i < argc; i++) {
        const char* f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) train_usage(argv[0], &defaults, model_flags, 0);
        if (f[0] != '-' || strlen(f) != 2) fail("unknown argument '%s' (see -h)", f);
        if (strchr("LCHF", f[1]) && !strchr(allowed, f[1])) fail("unknown flag %s for this model (see -h)", f);
        if (i + 1 >= argc) fail("flag %s needs a value (see -h)", f);
        const char* v = argv[++i];
        switch (f[1]) {
            case 'i': c->train_path = v; break;
            case 'j': c->val_path = v; break;
            case 'k': c->vocab_path = v; break;
            case 'e': c->init_path = v; break;
            case 'o': c->out_dir = v; break;
            case 'n': c->checkpoint_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'y': c->resume = parse_int_flag(f, v, 0, 1); break;
            case 'b': c->B = parse_int_flag(f, v, 1, 1 << 16); break;
            case 't': c->T = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'x': c->max_steps = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'l': c->lr = parse_float_flag(f, v, 0.0f, 10.0f); break;
            case 'u': c->warmup = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'q': c->final_frac = parse_float_flag(f, v, 0.0f, 1.0f); break;
            case 'c': c->weight_decay = parse_float_flag(f, v, 0.0f, 10.0f); break;
            case 'p': c->grad_clip = parse_float_flag(f, v, 0.0f, 1e6f); break;
            case 'v': c->val_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'm': c->val_batches = parse_int_flag(f, v, 0, 1 << 30); break;
            case 's': c->sample_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'g': c->gen_tokens = parse_int_flag(f, v, 0, 1 << 20); break;
            case 'r': c->seed = parse_int_flag(f, v, 0, 2147483647); break;
            case 'L': c->L = parse_int_flag(f, v, 1, 1024); break;
            case 'C': c->C = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'H': c->H = parse_int_flag(f, v, 1, 1024); break;
            case 'F': c->F = parse_int_flag(f, v, 1, 1 << 20); break;
            case 'G': c->generate_only = parse_int_flag(f, v, 0, 1); break;
            case 'P': c->prompt = v; break;
            case 'a': c->temperature = parse_float_flag(f, v, 1e-3f, 100.0f); break;
            case 'K': c->top_k = parse_int_flag(f, v, 0, 1 << 20); break;
            default: fail("unknown flag %s (see -h)", f);
        }
    }
    if ((c->checkpoint_every || c->resume) && !c->out_dir) fail("flags -n and -y need an output directory (-o)");
    if (c->generate_only && !c->init_path && !c->resume) fail("flag -G: needs a model to sample from (-e model.bin, or -o DIR -y 1)");
}

// The parameter-sized buffers every trainer keeps: parameters, gradients,
// AdamW moments (zeroed), and the global-norm scratch. An allocation that
// fails names the shape flags.
static void allocate_parameter_buffers(long n, float** params, float** grads, float** m, float** v, float** norm_buffer) {
    size_t bytes = n * sizeof(float);
    float** buffers[4] = {params, grads, m, v};
    for (float** b : buffers)
        if (cudaMalloc(b, bytes) != cudaSuccess)
            fail("flags -L/-C: %ld parameters need %.1f GiB with gradients and AdamW moments; allocation failed", n,
                 4.0 * bytes / (1 << 30));
    cudaCheck(cudaMemset(*m, 0, bytes));
    cudaCheck(cudaMemset(*v, 0, bytes));
    cudaCheck(cudaMalloc(norm_buffer, (NORM_BLOCKS + 2) * sizeof(float)));
}

// linear warmup, then cosine decay from lr to lr * final_frac at max_steps
static float learning_rate(float lr, int step, int warmup, int max_steps, float final_frac) {
    if (step < warmup) return lr * (step + 1) / warmup;
    if (max_steps <= warmup) return lr;
    float ratio = (float)(step - warmup) / (float)(max_steps - warmup);
    float coeff = 0.5f * (1.0f + cosf(3.14159265358979f * ratio));
    float min_lr = lr * final_frac;
    return min_lr + coeff * (lr - min_lr);
}

// Clips the gradients to a global norm and takes one AdamW step on each of
// ntensors consecutive tensors of the flat buffers, with weight decay where
// decay[i] is set. t is the 1-based step; norm_buffer is NORM_BLOCKS + 2
// floats on the device. Returns the gradient norm before clipping; when it is
// not finite, nothing is updated.
static float clip_and_adamw(float* params, float* m, float* v, const float* grads, const long* sizes,
                            const int* decay, int ntensors, float* norm_buffer, const AdamWConfig* o, float lr, int t) {
    long total = 0;
    for (int i = 0; i < ntensors; i++) total += sizes[i];
    global_norm(norm_buffer, grads, total, o->grad_clip);
    float norm;
    cudaCheck(cudaMemcpy(&norm, norm_buffer, sizeof(float), cudaMemcpyDeviceToHost));
    if (!std::isfinite(norm)) return norm;  // leave the parameters as they were (see check_finite)
    long off = 0;
    for (int i = 0; i < ntensors; i++) {
        adamw_update(params + off, m + off, v + off, grads + off, sizes[i], lr, o->beta1, o->beta2, o->eps,
                     decay[i] ? o->weight_decay : 0.0f, t, norm_buffer + 1);
        off += sizes[i];
    }
    return norm;
}

// draws a token from softmax(logits / temperature), restricted to the top_k
// likeliest tokens when top_k > 0
static int sample_token(const float* logits, int V, float temperature, int top_k, Rng* rng) {
    float maxv = -INFINITY;
    for (int i = 0; i < V; i++) maxv = fmaxf(maxv, logits[i]);
    float cutoff = -INFINITY;  // the k-th largest logit
    if (top_k > 0 && top_k < V) {
        std::vector<float> sorted(logits, logits + V);
        std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
        cutoff = sorted[top_k - 1];
    }
    std::vector<double> p(V);
    double sum = 0.0;
    for (int i = 0; i < V; i++) { p[i] = logits[i] >= cutoff ? exp((logits[i] - maxv) / temperature) : 0.0; sum += p[i]; }
    double u = rng_uniform(rng) * sum, cdf = 0.0;
    for (int i = 0; i < V; i++) { cdf += p[i]; if (u < cdf) return i; }
    return V - 1;
}

// loads train and val tokens and the vocabulary, checking that they agree
// and that one batch of each fits
static void load_lm_data(const TrainConfig* c, TokenData* train, TokenData* val, Vocab* vocab) {
    token_data_load(train, c->train_path);
    token_data_load(val, c->val_path);
    vocab_load(vocab, c->vocab_path);
    if (train->vocab_size != vocab->size) fail("%s: vocabulary of %d tokens, but %s has %d", c->train_path, train->vocab_size, c->vocab_path, vocab->size);
    if (val->vocab_size != vocab->size) fail("%s: vocabulary of %d tokens, but %s has %d", c->val_path, val->vocab_size, c->vocab_path, vocab->size);
    if (train->num_tokens <= c->T) fail("%s: %ld tokens, fewer than the sequence length %d + 1", c->train_path, train->num_tokens, c->T);
    if (token_data_num_val_batches(val, c->B, c->T) < 1) fail("%s: %ld tokens, too few for one %d x %d validation batch", c->val_path, val->num_tokens, c->B, c->T);
}

// resumes from the newest checkpoint in c->out_dir; returns the step to continue from
static int resume_from_checkpoint(const TrainConfig* c, int kind, const int* config_slots, const char* const* slot_names,
                                  float* params, float* m, float* v, Rng* train_rng, Rng* sample_rng) {
    std::vector<int> steps = checkpoint_steps(c->out_dir);
    if (steps.empty()) fail("flag -y: no checkpoint in %s", c->out_dir);
    CheckpointState s;
    s.kind = kind;
    memcpy(s.config, config_slots, sizeof(s.config));
    std::string path = checkpoint_path(c->out_dir, steps.back());
    checkpoint_load(path.c_str(), &s, slot_names, params, m, v);
    if (s.B != c->B || s.T != c->T) fail("%s: written with -b %d -t %d, resumed with -b %d -t %d", path.c_str(), s.B, s.T, c->B, c->T);
    train_rng->state = s.train_rng;
    sample_rng->state = s.sample_rng;
    printf("resumed from %s at step %d\n", path.c_str(), s.step);
    return s.step;
}


// Tokenizes a prompt by the longest vocabulary entry at each position
// (characters, for a char-level vocabulary). An empty or absent prompt is a
// newline when the vocabulary has one.
static std::vector<int> tokenize_prompt(const Vocab* vocab, const char* prompt) {
    std::vector<int> tokens;
    if (!prompt || !*prompt) {
        int nl = vocab_find(vocab, "\n");
        tokens.push_back(nl >= 0 ? nl : 0);
        return tokens;
    }
    size_t n = strlen(prompt);
    for (size_t i = 0; i < n;) {
        int best = -1;
        size_t best_len = 0;
        for (int v = 0; v < vocab->size; v++) {
            const std::string& t = vocab->text[v];
            if (t.size() > best_len && t.size() <= n - i && !memcmp(prompt + i, t.data(), t.size())) { best = v; best_len = t.size(); }
        }
        if (best < 0) fail("flag -P: the prompt's byte %zu ('%c') starts no token of the vocabulary", i, prompt[i]);
        tokens.push_back(best);
        i += best_len;
    }
    return tokens;
}

// "1h02m" / "3m07s" / "12s"
static void format_duration(char* out, size_t n, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, n, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60) snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, n, "%lds", s);
}

// The newest checkpoint in the output directory, or "none written".
static std::string last_checkpoint(const TrainConfig* c) {
    if (c->out_dir) {
        std::vector<int> steps = checkpoint_steps(c->out_dir);
        if (!steps.empty()) return checkpoint_path(c->out_dir, steps.back());
    }
    return "none written";
}

// Before a checkpoint or model file is written: stops the run if the
// parameters' norm is not finite (an update overflowed), so that every file
// written holds finite parameters. norm_buffer as for clip_and_adamw.
static void check_params_finite(const TrainConfig* c, int step, const float* params, long n, float* norm_buffer) {
    global_norm(norm_buffer, params, n, 0.0f);
    float norm;
    cudaCheck(cudaMemcpy(&norm, norm_buffer, sizeof(float), cudaMemcpyDeviceToHost));
    if (!std::isfinite(norm))
        fail("step %d: the parameters' norm is %g: stopping without writing; the last good checkpoint is %s", step,
             norm, last_checkpoint(c).c_str());
}

// A fresh run (no -y) must not write over another run's checkpoints.
static void check_output_dir_fresh(const TrainConfig* c) {
    if (!c->out_dir || c->resume || c->generate_only) return;
    std::vector<int> steps = checkpoint_steps(c->out_dir);
    if (!steps.empty())
        fail("flag -o: %s already holds the checkpoints of a run (newest at step %d); resume it with -y 1 or choose another directory",
             c->out_dir, steps.back());
}

// Stops the run on a non-finite loss or gradient norm. The update was not
// applied (clip_and_adamw skips it), and no checkpoint is written after
// this, so the newest checkpoint in -o is the last good one.
static void check_finite(const TrainConfig* c, int step, float loss, float norm) {
    if (std::isfinite(loss) && std::isfinite(norm)) return;
    fail("step %d: train loss %g, gradient norm %g: stopping; the last good checkpoint is %s", step, loss, norm,
         last_checkpoint(c).c_str());
}

// wall-clock seconds; host_clock() differences time a step once the device is synchronized
static double host_clock() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// "step 12/500: train loss 2.310 | lr 1.00e-03 | norm 0.83 | 45.1 ms | 22700 tok/s | ETA 3m07s"
static void print_step(int step, int start_step, int max_steps, float loss, float lr, float norm, double seconds,
                       long items, const char* rate_unit, double train_seconds) {
    char eta[32];
    format_duration(eta, sizeof(eta), train_seconds / (step - start_step) * (max_steps - step));
    printf("step %4d/%d: train loss %f | lr %.2e | norm %.3f | %.1f ms | %.0f %s | ETA %s\n", step, max_steps, loss, lr,
           norm, seconds * 1e3, items / seconds, rate_unit, eta);
    fflush(stdout);
}

static void save_checkpoint(const TrainConfig* c, int kind, const int* config_slots, int step, const Rng* train_rng,
                            const Rng* sample_rng, const float* params, const float* m, const float* v,
                            float* norm_buffer) {
    check_params_finite(c, step, params, config_slots[CONFIG_SLOTS - 1], norm_buffer);
    CheckpointState s = {kind, {0}, step, train_rng->state, sample_rng->state, c->B, c->T};
    memcpy(s.config, config_slots, sizeof(s.config));
    checkpoint_save(checkpoint_path(c->out_dir, step).c_str(), &s, params, m, v);
    checkpoint_prune(c->out_dir, 3);
}

// ----------------------------------------------------------------------------
// The language models' validation, sampling and training loop. A model type
// M provides the hooks
//   void  lm_forward(M*, const int* inputs, const int* targets, int B, int T)  (targets may be null)
//   void  lm_backward(M*, int B, int T)
//   float lm_update(M*, const AdamWConfig*, float lr, int step)  -> gradient norm
// and the fields config.vocab_size, seq_len, acts.logits, mean_loss,
// params_memory, m_memory, v_memory, num_parameters, config_slots, norm_buffer.

// mean loss over the first max_batches validation batches
template <typename M> static float lm_validate(M* model, const TokenData* val, int B, int T, int max_batches) {
    NVTX_RANGE("validate");
    int n = token_data_num_val_batches(val, B, T);
    if (max_batches > 0 && max_batches < n) n = max_batches;
    std::vector<int> inputs((long)B * T), targets((long)B * T);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        token_data_val_batch(val, i, B, T, inputs.data(), targets.data());
        lm_forward(model, inputs.data(), targets.data(), B, T);
        sum += model->mean_loss;
    }
    return (float)(sum / n);
}

// prints the prompt, then `length` sampled tokens; the model sees the last
// seq_len tokens at each step
template <typename M> static void lm_sample(M* model, const Vocab* vocab, const std::vector<int>& prompt, int length,
                                            float temperature, int top_k, Rng* rng) {
    NVTX_RANGE("sample");
    int V = model->config.vocab_size, maxT = model->seq_len;
    std::vector<int> tokens = prompt;
    std::vector<float> logits(V);
    printf("---\n");
    for (int t : tokens) printf("%s", vocab->text[t].c_str());
    for (int i = 0; i < length; i++) {
        int n = (int)tokens.size();
        int T = n < maxT ? n : maxT;
        lm_forward(model, tokens.data() + (n - T), nullptr, 1, T);
        cudaCheck(cudaMemcpy(logits.data(), model->acts.logits + (long)(T - 1) * V, V * sizeof(float), cudaMemcpyDeviceToHost));
        int next = sample_token(logits.data(), V, temperature, top_k, rng);
        tokens.push_back(next);
        printf("%s", vocab->text[next].c_str());
        fflush(stdout);
    }
    printf("\n---\n");
}

// After the model is built and initialized: resumes (-y), samples only (-G),
// or trains: validation every -v steps, samples every -s, checkpoints every
// -n (and at the end), a step line and a log line per step, the final model
// in -o. Returns the exit status.
template <typename M> static int lm_run(M* model, TrainConfig* tc, int kind, const char* const* slot_names,
                                        const TokenData* train, const TokenData* val, const Vocab* vocab) {
    int B = tc->B, T = tc->T;
    AdamWConfig opt = {tc->lr, 0.9f, 0.99f, 1e-8f, tc->weight_decay, tc->grad_clip};
    std::vector<int> prompt = tokenize_prompt(vocab, tc->prompt);
    Rng train_rng, sample_rng;
    rng_seed(&train_rng, tc->seed);
    rng_seed(&sample_rng, tc->seed + 1);
    int start_step = 0;
    if (tc->out_dir && !tc->generate_only) make_dir_or_fail(tc->out_dir);
    check_output_dir_fresh(tc);
    if (tc->resume)
        start_step = resume_from_checkpoint(tc, kind, model->config_slots, slot_names, model->params_memory,
                                            model->m_memory, model->v_memory, &train_rng, &sample_rng);
    if (tc->generate_only) {
        lm_sample(model, vocab, prompt, tc->gen_tokens, tc->temperature, tc->top_k, &sample_rng);
        return 0;
    }
    printf("batch %d x %d | steps %d | lr %g warmup %d final x%g | wd %g | clip %g | train %ld tokens, val %ld\n",
           B, T, tc->max_steps, opt.lr, tc->warmup, tc->final_frac, opt.weight_decay, opt.grad_clip, train->num_tokens,
           val->num_tokens);

    Logger logger;
    logger_open(&logger, tc->out_dir, start_step);
    std::vector<int> inputs((long)B * T), targets((long)B * T);
    double run_start = host_clock(), train_seconds = 0.0;
    float last_val = NAN;
    for (int step = start_step; step <= tc->max_steps; step++) {
        bool last = step == tc->max_steps;
        if ((tc->val_every > 0 && step % tc->val_every == 0) || last) {
            last_val = lm_validate(model, val, B, T, tc->val_batches);
            printf("val loss %f\n", last_val);
            log_eval(&logger, step, "val_loss", last_val, host_clock() - run_start);
        }
        if (((tc->sample_every > 0 && step > 0 && step % tc->sample_every == 0) || last) && tc->gen_tokens > 0)
            lm_sample(model, vocab, prompt, tc->gen_tokens, tc->temperature, tc->top_k, &sample_rng);
        if (tc->out_dir && step > start_step && ((tc->checkpoint_every > 0 && step % tc->checkpoint_every == 0) || last))
            save_checkpoint(tc, kind, model->config_slots, step, &train_rng, &sample_rng, model->params_memory,
                            model->m_memory, model->v_memory, model->norm_buffer);
        if (last) break;

        NVTX_RANGE("step");
        double t0 = host_clock();
        token_data_train_batch(train, &train_rng, B, T, inputs.data(), targets.data());
        lm_forward(model, inputs.data(), targets.data(), B, T);
        lm_backward(model, B, T);
        float lr = learning_rate(opt.lr, step, tc->warmup, tc->max_steps, tc->final_frac);
        float norm = lm_update(model, &opt, lr, step + 1);
        cudaCheck(cudaDeviceSynchronize());
        check_finite(tc, step + 1, model->mean_loss, norm);
        double seconds = host_clock() - t0;
        train_seconds += seconds;
        print_step(step + 1, start_step, tc->max_steps, model->mean_loss, lr, norm, seconds, (long)B * T, "tok/s", train_seconds);
        log_train(&logger, step + 1, model->mean_loss, lr, norm, "tokens_per_s", B * T / seconds, host_clock() - run_start);
    }
    logger_close(&logger);
    if (tc->out_dir) {
        std::string path = std::string(tc->out_dir) + "/model.bin";
        check_params_finite(tc, tc->max_steps, model->params_memory, model->num_parameters, model->norm_buffer);
        model_file_save(path.c_str(), kind, model->config_slots, model->params_memory);
        printf("wrote %s\n", path.c_str());
    }
    printf("final val loss %f\n", last_val);
    return 0;
}
