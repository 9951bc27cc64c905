/*
The language models' training loop, lm_run, and what only they need: their
flags (llm.c's letters where llm.c has one), the token data and its
vocabulary (or task files: sequences with targets at some positions),
validation, and sampling. What the image classifiers share with
them (schedule, guards, step line, checkpoints) is in trainer.h; the update
(clipping plus AdamW) in model.h. A model file train_*.cu defines its model
and the two hooks lm_run calls, then hands its main over to lm_run. A model
that carries a state along the sequence (the Mamba) also provides
lm_eval_chunked, and task files longer than its chunk (-d) are evaluated
through it a chunk at a time, in memory constant in their length.
*/
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>
#include "cuda_common.h"
#include "crossentropy.cuh"
#include "dataloader.h"
#include "logger.h"
#include "model.h"
#include "trainer.h"
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
    int seed_given;          // -r was given
    int L, C, H, F;          // model shape flags (each model uses what it has)
    int d_state;             // -N: the state size where a model lets it be chosen (train_mamba -M 2); 0: the model's
    float dt_min;            // -U: the smallest dt of a Mamba's initialization (train_mamba); 0: mamba_ssm's 1e-3
    int state_passing;       // -R: (train_mamba) 1: each training batch starts from the SSM states the last one ended in
    float dt_stretch;        // -Y: (train_mamba) the dt stretch's largest factor G (selective_scan.cuh), 0: none
    const char* pattern;     // -A: the hybrid LM's layers, one letter each (train_hybrid.cu)
    const char* mixer;       // -M: the Mamba's mixer, selective, lti or 2 (train_mamba.cu); null: not given
    int eval_chunk;          // -d: task sequences longer than this are evaluated this many positions at a time
                             // (models that evaluate in chunks; default the preset's B x T), 0: one pass
    int generate_only;       // -G: sample from the model (-e or -y) and exit
    const char* prompt;      // -P: text to start samples from (default: a newline)
    float temperature;       // -a
    int top_k;               // -K: sample among the k likeliest tokens, 0 = all
    int preset;              // -S: PRESET_SEED or PRESET_CPU (trainer.h)
    int windowed;            // -W: generate by re-running the forward over the last T tokens (for comparison)
    int image_len;           // -I: the data is images of this many tokens (0: text); see "Images as token sequences"
    char shape_given[8];     // the shape flags given (letters of -L -C -H -F -A -N): with -e they must agree with the file
    int batch_given, seq_given;  // -b, -t given
    int task;                // the data are task files (load_lm_data): their task (dataloader.h), else 0
    float dropout;           // -D: dropout at training steps (each model's places), 0 = none
    int train_eval;          // -V: each validation also evaluates as many tokens of the training set
} TrainConfig;

// what a preset sets (the rest of the defaults are common to both)
typedef struct {
    int L, C;                // model shape
    int B, T, max_steps, warmup, val_every;
    float lr;
} LMPreset;

// the LM trainers' defaults but for those a preset sets
static TrainConfig default_lm_config() {
    TrainConfig c;
    memset(&c, 0, sizeof(c));
    c.train_path = "data/tinyshakespeare_train.bin";
    c.val_path = "data/tinyshakespeare_val.bin";
    c.vocab_path = "data/tinyshakespeare_vocab.bin";
    c.final_frac = 0.1f; c.weight_decay = 1e-5f; c.grad_clip = 1.0f;
    c.val_batches = 20; c.gen_tokens = 256; c.seed = 1337;
    c.temperature = 1.0f;
    return c;
}

static void train_usage(const char* program, const TrainConfig* d, const char* model_flags, int status) {
    fprintf(status ? stderr : stdout,
        "Usage: %s [options]\n"
        "  -i <path>   train tokens, or a task file (default %s)\n"
        "  -j <path>   val tokens, or a task file (default %s)\n"
        "  -k <path>   vocabulary            (default %s)\n"
        "  -e <path>   initialize from a model file instead of random\n"
        "  -o <dir>    output directory: checkpoints and the final model.bin\n"
        "  -n <int>    checkpoint every n steps, with -o (default 0: only at the end)\n"
        "  -y <0|1>    resume from the newest checkpoint in -o (default 0)\n"
        "  -b <int>    batch size B; with -G, samples generated at once (default %d; with -G 1)\n"
        "  -t <int>    sequence length T (default %d; with task files the files' length)\n"
        "  -x <int>    training steps (default %d)\n"
        "  -l <float>  learning rate (default %g)\n"
        "  -u <int>    warmup steps (default %d)\n"
        "  -q <float>  final learning rate as a fraction of -l, cosine decay (default %g)\n"
        "  -c <float>  weight decay (default %g)\n"
        "  -p <float>  gradient norm clip, 0 = none (default %g)\n"
        "  -D <float>  dropout at training steps, in [0, 0.95] (default 0: none)\n"
        "  -v <int>    validate every v steps, 0 = only at the end (default %d)\n"
        "  -m <int>    validation batches, 0 = all (default %d)\n"
        "  -V <0|1>    each validation also evaluates the first -m batches of the training set, no dropout\n"
        "              (\"train loss\" on the val line, train_eval_loss in the log; default 0)\n"
        "  -s <int>    sample every s steps, 0 = only at the end (default %d)\n"
        "  -g <int>    tokens to sample, 0 = none (default %d)\n"
        "  -r <int>    random seed (default %d)\n"
        "  -G <0|1>    only generate text from the model of -e or -y, then exit; -b samples at once (default 0)\n"
        "  -P <text>   prompt for samples (default a newline)\n"
        "  -a <float>  sampling temperature, 0 = greedy (default %g)\n"
        "  -K <int>    sample among the K likeliest tokens, 0 = all (default %d)\n"
        "  -S <name>   preset of the defaults: seed (the write-up's) or cpu (default %s)\n"
        "  -W <0|1>    generate the old way, a forward over the last -t tokens per token (benchmarks; default 0)\n"
        "  -I <int>    the data is images of this many tokens each (pixels: 3072): one whole image per window\n"
        "              after a start token, bits/dim beside the loss, -G writes whole images (default 0: text)\n"
        "  -z <0|1>    under mpirun: ZeRO-1, the AdamW state sharded over the ranks (default 0); -b is per rank\n"
        "%s"
        "  -h          this help\n",
        program, d->train_path, d->val_path, d->vocab_path, d->B, d->T, d->max_steps, d->lr, d->warmup,
        d->final_frac, d->weight_decay, d->grad_clip, d->val_every, d->val_batches, d->sample_every,
        d->gen_tokens, d->seed, d->temperature, d->top_k, d->preset == PRESET_CPU ? "cpu" : "seed", model_flags);
    exit(status);
}

// Sets the preset's defaults (-S, else the backend's), then parses "-x
// value" pairs over them. presets: the model's seed and cpu presets;
// model_flags is the help text of -L/-C/-H/-F/-A/-M/-d for this model,
// allowed names the model letters it takes (MODEL_LETTERS; the others are
// refused with one line). A model that takes -d evaluates in chunks
// (lm_evaluates_in_chunks): its chunk defaults to the preset's B x T.
#define MODEL_LETTERS "LCHFAMdNURY"  // the flags a model takes only where its trainer says (the allowed letters)

static void parse_train_flags(int argc, char** argv, TrainConfig* c, const LMPreset* presets, const char* model_flags,
                              const char* allowed) {
    dist_init();  // the ranks, when mpirun started this process (distributed.h)
    c->preset = find_preset(argc, argv);
    const LMPreset& p = presets[c->preset];
    c->L = p.L; c->C = p.C; c->B = p.B; c->T = p.T;
    c->max_steps = p.max_steps; c->warmup = p.warmup; c->val_every = p.val_every; c->lr = p.lr;
    c->eval_chunk = strchr(allowed, 'd') ? p.B * p.T : 0;
    TrainConfig defaults = *c;
    bool batch_given = false, seq_given = false;
    for (int i = 1; i < argc; i++) {
        const char* f = argv[i];
        const char* v = nullptr;
        char letter = next_flag(argc, argv, &i, MODEL_LETTERS, allowed, &v);
        if (letter == 'h') train_usage(argv[0], &defaults, model_flags, 0);
        if (letter == 'A') note_shape_flag(c, 'A');
        if (parse_shared_flag(c, letter, f, v)) continue;
        switch (letter) {
            case 'j': c->val_path = v; break;
            case 'k': c->vocab_path = v; break;
            case 'b': c->B = parse_int_flag(f, v, 1, 1 << 16); batch_given = true; break;
            case 't': c->T = parse_int_flag(f, v, 1, 1 << 16); seq_given = true; break;
            case 'v': c->val_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'm': c->val_batches = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'V': c->train_eval = parse_int_flag(f, v, 0, 1); break;
            case 'D': c->dropout = parse_float_flag(f, v, 0.0f, 0.95f); break;
            case 's': c->sample_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'g': c->gen_tokens = parse_int_flag(f, v, 0, 1 << 20); break;
            case 'A': c->pattern = v; break;
            case 'M':
                c->mixer = v;
                if (strcmp(v, "selective") && strcmp(v, "lti") && strcmp(v, "2"))
                    fail("flag -M: unknown mixer '%s' (selective, lti or 2)", v);
                break;
            case 'd': c->eval_chunk = parse_int_flag(f, v, 1, 1 << 24); break;
            case 'N': c->d_state = parse_int_flag(f, v, 1, 1024); note_shape_flag(c, 'N'); break;  // (the model checks its limits)
            case 'U': c->dt_min = parse_float_flag(f, v, 1e-30f, 0.05f); break;
            case 'R': c->state_passing = parse_int_flag(f, v, 0, 1); break;
            case 'Y': c->dt_stretch = parse_float_flag(f, v, 1.0f, 1e12f); break;
            case 'G': c->generate_only = parse_int_flag(f, v, 0, 1); break;
            case 'P': c->prompt = v; break;
            case 'a': c->temperature = parse_float_flag(f, v, 0.0f, 100.0f); break;
            case 'K': c->top_k = parse_int_flag(f, v, 0, 1 << 20); break;
            case 'S': break;  // find_preset
            case 'W': c->windowed = parse_int_flag(f, v, 0, 1); break;
            case 'I': c->image_len = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'z': dist.zero = parse_int_flag(f, v, 0, 1); break;
            default: fail("unknown flag %s (see -h)", f);
        }
    }
    c->batch_given = batch_given;
    c->seq_given = seq_given;
    if ((c->checkpoint_every || c->resume) && !c->out_dir) fail("flags -n and -y need an output directory (-o)");
    if (c->generate_only && !c->init_path && !c->resume) fail("flag -G: needs a model to sample from (-e model.bin, or -o DIR -y 1)");
    if (c->generate_only && !batch_given && !c->resume) c->B = 1;  // one sample unless -b asks for more
    if (c->train_eval && c->image_len) fail("flag -V: text only; with -I the validation is over whole images");
    if (c->image_len) {  // a window is one whole image
        if (seq_given && c->T != c->image_len)
            fail("flag -t: with -I %d a window is one whole image of %d tokens, not %d", c->image_len, c->image_len, c->T);
        c->T = c->image_len;
        if (c->windowed) fail("flag -W: not with -I (images are generated whole, by the recurrent step)");
        if (c->prompt) fail("flag -P: not with -I (an image starts from the start token)");
    }
}

// draws a token from softmax(logits / temperature), restricted to the top_k
// likeliest tokens when top_k > 0; temperature 0 is greedy (the first
// largest logit), as top_k 1 is
static int sample_token(const float* logits, int V, float temperature, int top_k, Rng* rng) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0.0f || top_k == 1) return best;
    float maxv = logits[best];
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

// Task files as the data (-i train, -j val, told by their magic): the
// length T is the files' (a -t that differs is refused), the vocabulary
// their V (token ids as its text; there is nothing to sample). Training
// needs both files of the same task, length and vocabulary; evaluating only
// (-x 0) reads -j alone and, without -b, takes as many sequences at once as
// fill the preset's batch of B x T tokens (at least one, at most the
// file's). The training file is read into memory; the validation file is
// read a batch (or a chunk) at a time (task_data_open), so its length costs
// no memory. Evaluating only with a model that evaluates in chunks (-d, the
// Mamba's), sequences longer than the chunk run chunk by chunk: c->T becomes
// the chunk (the activations' length), the batch the sequences of the chunk
// that fit the preset's B x T tokens.
static void load_task_data(TrainConfig* c, TokenData* train, TokenData* val, Vocab* vocab) {
    bool evaluate_only = c->max_steps == 0 && !c->resume;
    if (c->generate_only) fail("flag -G: %s is a task file; generation needs text and its vocabulary", c->val_path);
    if (c->image_len) fail("flag -I: not with task files (%s)", c->val_path);
    check_data_file(c->val_path, "", "");
    task_data_open(val, c->val_path);
    train->path = c->train_path;
    train->task = 0;
    train->num_tokens = train->num_sequences = 0;
    train->file = nullptr;
    if (!evaluate_only) {
        check_data_file(c->train_path, "", "");
        if (file_magic(c->train_path) != MAGIC_TASK)
            fail("%s: not a task file (magic %d), but %s is; train and validate on the same task", c->train_path,
                 file_magic(c->train_path), c->val_path);
        task_data_load(train, c->train_path);
        if (train->task != val->task || train->seq_len != val->seq_len || train->vocab_size != val->vocab_size)
            fail("%s: %s, length %d, vocabulary %d, but %s has %s, length %d, vocabulary %d", c->val_path,
                 task_name(val->task), val->seq_len, val->vocab_size, c->train_path, task_name(train->task),
                 train->seq_len, train->vocab_size);
    }
    int T = val->seq_len;
    if (c->seq_given && c->T != T)
        fail("flag -t: %d, but %s holds sequences of %d tokens; with task files the length is theirs (leave -t out)", c->T,
             c->val_path, T);
    int span = evaluate_only && c->eval_chunk > 0 && T > c->eval_chunk ? c->eval_chunk : T;  // positions per forward
    if (evaluate_only && !c->batch_given) {
        long fit = (long)c->B * c->T / span;
        c->B = (int)std::max(1L, std::min(fit, val->num_sequences));
    }
    c->T = span;
    c->task = val->task;
    if (c->train_eval) fail("flag -V: text only; task files are scored at their target positions (%s)", c->val_path);
    vocab->size = val->vocab_size;
    vocab->text.clear();
    for (int i = 0; i < vocab->size; i++) vocab->text.push_back(std::to_string(i) + " ");
}

// Loads train and val tokens and the vocabulary, checking that they agree
// and that one batch of each fits; or task files (load_task_data), when -j
// is one, or -i is one and the run trains.
static void load_lm_data(TrainConfig* c, TokenData* train, TokenData* val, Vocab* vocab) {
    bool trains = c->max_steps > 0 || c->resume;
    if (file_magic(c->val_path) == MAGIC_TASK || (trains && file_magic(c->train_path) == MAGIC_TASK)) {
        if (file_magic(c->val_path) != MAGIC_TASK)
            fail("%s: not a task file (magic %d), but %s is; give the task's validation file with -j", c->val_path,
                 file_magic(c->val_path), c->train_path);
        load_task_data(c, train, val, vocab);
        return;
    }
    const char* make_data = "`make data` (from dev/data/tinyshakespeare/input.txt)";
    check_data_file(c->train_path, "data/tinyshakespeare_train.bin", make_data);
    check_data_file(c->val_path, "data/tinyshakespeare_val.bin", make_data);
    check_data_file(c->vocab_path, "data/tinyshakespeare_vocab.bin", make_data);
    token_data_load(train, c->train_path);
    token_data_load(val, c->val_path);
    vocab_load(vocab, c->vocab_path);
    if (train->vocab_size != vocab->size) fail("%s: vocabulary of %d tokens, but %s has %d", c->train_path, train->vocab_size, c->vocab_path, vocab->size);
    if (val->vocab_size != vocab->size) fail("%s: vocabulary of %d tokens, but %s has %d", c->val_path, val->vocab_size, c->vocab_path, vocab->size);
    if (c->image_len) {
        // images: whole images only, and the start token after the data's vocabulary
        for (const TokenData* d : {train, val})
            if (d->num_tokens % c->image_len)
                fail("%s: %ld tokens are not whole images of %d tokens (flag -I)", d->path, d->num_tokens, c->image_len);
        vocab->text.push_back("<start>");
        vocab->size++;
        return;
    }
    if (c->generate_only) return;  // batches of the data are not needed
    if (train->num_tokens <= c->T) fail("%s: %ld tokens, fewer than the sequence length %d + 1", c->train_path, train->num_tokens, c->T);
    if (token_data_num_val_batches(val, c->B, c->T) < 1) fail("%s: %ld tokens, too few for one %d x %d validation batch", c->val_path, val->num_tokens, c->B, c->T);
}


// a model file's vocabulary must be the data's
static void check_model_vocab(const TrainConfig* c, int model_vocab, const Vocab* vocab) {
    if (model_vocab != vocab->size && c->task)
        fail("%s: vocabulary of %d tokens, but %s has %d", c->init_path, model_vocab, c->val_path, vocab->size);
    if (model_vocab != vocab->size) {
        if (c->image_len)
            fail("%s: vocabulary of %d tokens, but %s has %d and -I adds a start token (%d)", c->init_path, model_vocab,
                 c->vocab_path, vocab->size - 1, vocab->size);
        fail("%s: vocabulary of %d tokens, but %s has %d", c->init_path, model_vocab, c->vocab_path, vocab->size);
    }
}

// A model with a position table of max_T positions (the GPT's, the hybrid's
// with attention) runs sequences up to max_T long: a longer -t, or task
// files of longer sequences, are refused.
static void check_length_fits(const TrainConfig* c, int max_T) {
    if (c->T <= max_T) return;
    if (c->task)
        fail("%s: sequences of %d tokens, longer than the %d positions of the model's position table (%s)", c->val_path,
             c->T, max_T, c->init_path);
    fail("flag -t: %d exceeds the model's maximum sequence length %d (%s)", c->T, max_T, c->init_path);
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

// ----------------------------------------------------------------------------
// The language models' validation, sampling and training loop. A model type
// M has the fields config.vocab_size, acts.logits, dropout (TrainDropout,
// llmc/model.h) and buf (ModelBuffers), and provides the hooks
//   void lm_forward(M*, const int* inputs, const int* targets, int B, int T, int train_step)
//        host arrays, targets may be null; train_step >= 0: a training step (dropout on, its
//        masks keyed by the step), -1: evaluation and generation (no dropout)
//   void lm_backward(M*, int B, int T)
// The forward sets buf.mean_loss when given targets.

// mean loss over the first max_batches validation batches; over several
// ranks the batches are global (B rows per rank), each rank runs its rows
// and the means are summed over the ranks
template <typename M> static float lm_validate(M* model, const TokenData* val, int B, int T, int max_batches) {
    NVTX_RANGE("validate");
    int G = B * dist.world;
    int n = token_data_num_val_batches(val, G, T);
    if (max_batches > 0 && max_batches < n) n = max_batches;
    std::vector<int> inputs((long)G * T), targets((long)G * T);
    long mine = dist_rows(B) * T;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        token_data_val_batch(val, i, G, T, inputs.data(), targets.data());
        lm_forward(model, inputs.data() + mine, targets.data() + mine, B, T, -1);
        sum += model->buf.mean_loss;
    }
    dist_sum_host(&sum, 1);
    return (float)(sum / ((double)n * dist.world));
}

// this rank's rows of the global batch of `rows` rows (B per rank): how many, from row *first_mine
static int dist_batch_rows(int rows, int B, long* first_mine) {
    *first_mine = dist_rows(B);
    return (int)std::max(0L, std::min((long)B, rows - *first_mine));
}

// With -I: the mean loss per image token (pixel value) over the first
// max_images images of val (0: all of them; a last batch of fewer than B
// images included), the start token start_token; bits per dimension is
// this / ln 2. Over several ranks the batches are global (B images per
// rank), each rank runs its images of each.
template <typename M> static double lm_validate_images(M* model, const TokenData* val, int B, int N, int start_token,
                                                       long max_images) {
    NVTX_RANGE("validate");
    long n = token_data_num_images(val, N);
    if (max_images > 0 && max_images < n) n = max_images;
    std::vector<int> inputs((long)B * N), targets((long)B * N);
    double sum = 0.0;  // of the per-token losses
    for (long first = 0; first < n; first += (long)B * dist.world) {  // a global batch, this rank's rows of it
        long mine;
        int rows = dist_batch_rows((int)std::min<long>((long)B * dist.world, n - first), B, &mine);
        if (rows == 0) continue;
        token_data_image_batch(val, first + mine, rows, N, start_token, inputs.data(), targets.data());
        lm_forward(model, inputs.data(), targets.data(), rows, N, -1);
        sum += (double)model->buf.mean_loss * rows * N;
    }
    dist_sum_host(&sum, 1);
    return sum / ((double)n * N);
}

static double bits_per_dim(double mean_loss) { return mean_loss / log(2.0); }

// ----------------------------------------------------------------------------
// Task files: validation over the positions with a target.

// A model whose state carries from one chunk of positions to the next (the
// Mamba) evaluates task sequences longer than its activations chunk by chunk,
// in memory constant in the length. It says so by specializing
//   template <> constexpr bool lm_evaluates_in_chunks<M> = true;
// and provides the hook
//   void lm_eval_chunked(M*, int B, int T, int Tc, const ChunkRead& read, const ChunkDone& done)
// which takes rows (B, T) Tc positions at a time (n = Tc but for the last
// chunk): read(t0, n, inputs, targets) fills the chunk's inputs and targets
// (B, n) (host), the forward runs it from the state the chunk before left
// (rows start empty), and done(t0, n, targets) follows it, acts.logits (B,
// n, V) and acts.losses (B, n) the chunk's, targets what read filled. Other
// models evaluate in one pass.
typedef std::function<void(int t0, int n, int* inputs, int* targets)> ChunkRead;
typedef std::function<void(int t0, int n, const int* targets)> ChunkDone;
template <typename M> constexpr bool lm_evaluates_in_chunks = false;

// Rows (rows, T) of task sequences through the model, Tc positions at a time
// (Tc = T: one forward, lm_forward), as lm_eval_chunked describes.
template <typename M> static void lm_eval_task_rows(M* model, int rows, int T, int Tc, const ChunkRead& read,
                                                    const ChunkDone& done, std::vector<int>* inputs,
                                                    std::vector<int>* targets) {
    if (Tc < T) {
        if constexpr (lm_evaluates_in_chunks<M>) lm_eval_chunked(model, rows, T, Tc, read, done);
        else fail("lm_eval_task_rows: sequences of %d tokens in chunks of %d, but this model evaluates in one pass", T, Tc);
        return;
    }
    read(0, T, inputs->data(), targets->data());
    lm_forward(model, inputs->data(), targets->data(), rows, T, -1);
    done(0, T, targets->data());
}

typedef struct {
    double loss;     // mean cross-entropy over the positions with a target
    double acc;      // % of those positions whose likeliest token is the target
    double seq_acc;  // % of the sequences with every target right
} TaskScore;

// the score over the first max_batches batches of B sequences of val (0:
// all; a last batch of fewer included), in the file's order, Tc positions
// at a time (lm_eval_task_rows): the loss sum, the right count and each
// sequence's all-right flag accumulate chunk by chunk
template <typename M> static TaskScore lm_validate_task(M* model, const TokenData* val, int B, int Tc, int max_batches) {
    NVTX_RANGE("validate");
    int T = val->seq_len;
    long n = val->num_sequences, G = (long)B * dist.world;  // global batches, this rank's rows of each
    if (max_batches > 0 && (long)max_batches * G < n) n = (long)max_batches * G;
    std::vector<int> inputs((long)B * Tc), targets((long)B * Tc), predictions((long)B * Tc);  // (rows, chunk)
    std::vector<float> losses((long)B * Tc);
    std::vector<char> all_right(B);  // (rows) every target so far right
    int* predictions_device;
    cudaCheck(cudaMalloc(&predictions_device, (long)B * Tc * sizeof(int)));
    double loss_sum = 0.0;
    long positions = 0, right = 0, sequences_right = 0;
    for (long first = 0; first < n; first += G) {
        long mine;
        int rows = dist_batch_rows((int)std::min<long>(G, n - first), B, &mine);
        if (rows == 0) continue;
        std::fill(all_right.begin(), all_right.end(), 1);
        auto read = [&](int t0, int len, int* in, int* tg) { task_data_read(val, first + mine, rows, t0, len, in, tg); };
        auto done = [&](int t0, int len, const int* tg) {
            long count = (long)rows * len;
            argmax_rows(predictions_device, model->acts.logits, (int)count, model->config.vocab_size);
            cudaCheck(cudaMemcpy(losses.data(), model->acts.losses, count * sizeof(float), cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(predictions.data(), predictions_device, count * sizeof(int), cudaMemcpyDeviceToHost));
            for (int r = 0; r < rows; r++) {
                for (long i = (long)r * len; i < (long)(r + 1) * len; i++) {
                    if (tg[i] < 0) continue;
                    loss_sum += losses[i];
                    positions++;
                    right += predictions[i] == tg[i];
                    all_right[r] = all_right[r] && predictions[i] == tg[i];
                }
            }
        };
        lm_eval_task_rows(model, rows, T, Tc, read, done, &inputs, &targets);
        for (int r = 0; r < rows; r++) sequences_right += all_right[r];
    }
    cudaCheck(cudaFree(predictions_device));
    double sums[4] = {loss_sum, (double)positions, (double)right, (double)sequences_right};  // exact below 2^53
    dist_sum_host(sums, 4);
    loss_sum = sums[0];
    positions = (long)sums[1]; right = (long)sums[2]; sequences_right = (long)sums[3];
    TaskScore score = {loss_sum / positions, 100.0 * right / positions, 100.0 * sequences_right / n};
    return score;
}

// "val loss X | acc Y%", and "| seq acc Z%" when a sequence holds several targets
static void print_task_score(const char* prefix, const TaskScore& s, const TokenData* val) {
    printf("%sval loss %f | acc %.2f%%", prefix, s.loss, s.acc);
    if (val->targets_per_sequence > 1) printf(" | seq acc %.2f%%", s.seq_acc);
}

// the evaluation's line of log.jsonl:
//   {"step": 400, "val_loss": 0.12, "val_acc": 97.5, "val_seq_acc": 80.1, "elapsed_s": 130.2}
static void log_task_score(Logger* lg, int step, const TaskScore& s, double elapsed) {
    logger_write(lg, "{\"step\": %d, \"val_loss\": %s, \"val_acc\": %s, \"val_seq_acc\": %s, \"elapsed_s\": %.3f}\n", step,
                 json_number("%.6f", s.loss).c_str(), json_number("%.4f", s.acc).c_str(),
                 json_number("%.4f", s.seq_acc).c_str(), elapsed);
}

// ----------------------------------------------------------------------------
// Generation, token by token from a state the model carries (the Mamba's
// conv and SSM states, the GPT's KV cache). The model provides
//   void lm_generate_begin(M*, int B)    the state for B rows (up to the activations' batch)
//   void lm_prefill(M*, const int* tokens, int B, int T)   (B, T) host tokens: the parallel forward
//   void lm_step(M*, const int* tokens, int B)              one token per row
//   void lm_generate_end(M*)             frees the state
// after each of which gen.logits (B, V) on the device holds the logits of
// the next token of every row.

// the device buffers of one generation step, B rows
typedef struct {
    int B;
    int* tokens;    // (B)
    float* x;       // (B, C)  the residual stream of the rows' newest tokens
    float* lnf;     // (B, C)
    float* logits;  // (B, V)
} StepBuffers;

static void step_buffers_alloc(StepBuffers* s, int B, int C, int V) {
    s->B = B;
    if (cudaMalloc(&s->tokens, B * sizeof(int)) != cudaSuccess || cudaMalloc(&s->x, (long)B * C * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&s->lnf, (long)B * C * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&s->logits, (long)B * V * sizeof(float)) != cudaSuccess)
        fail("flag -b: %d rows of generation buffers do not fit in memory", B);
}

static void step_buffers_free(StepBuffers* s) {
    if (!s->B) return;
    cudaCheck(cudaFree(s->tokens));
    for (float* p : {s->x, s->lnf, s->logits}) cudaCheck(cudaFree(p));
    s->B = 0;
}

// A prompt (B, T) (host) into a model that carries a recurrent state (no
// context limit, the Mamba's): its first tokens, as many as the activations
// hold (max_T), through prefill(rows, first), the parallel forward over rows
// (B, first) that leaves every state after them; the rest one position at a
// time through step(column), column the B rows' tokens at that position.
template <typename Prefill, typename Step>
static void lm_prefill_recurrent(const int* tokens, int B, int T, int max_T, Prefill prefill, Step step) {
    int first = T < max_T ? T : max_T;
    std::vector<int> head((long)B * first), column(B);
    for (int b = 0; b < B; b++) std::copy(tokens + (long)b * T, tokens + (long)b * T + first, head.begin() + (long)b * first);
    prefill(head.data(), first);
    for (int t = first; t < T; t++) {
        for (int b = 0; b < B; b++) column[b] = tokens[(long)b * T + t];
        step(column.data());
    }
}

// after a parallel forward over (B, T): the last position's logits of each row into s->logits
static void step_logits_from_forward(StepBuffers* s, const float* logits, int B, int T, int V) {
    for (int b = 0; b < B; b++)
        cudaCheck(cudaMemcpy(s->logits + (long)b * V, logits + ((long)b * T + T - 1) * V, V * sizeof(float),
                             cudaMemcpyDeviceToDevice));
}

// what the last lm_generate measured: its time (prefill included) and the
// mean time per token of each block of GENERATE_BLOCK generated tokens
#define GENERATE_BLOCK 100
static double generate_seconds = 0.0;
static std::vector<double> generate_block_ms;

// The old way, for comparison (-W 1): one row, each token from a parallel
// forward over the last seq_len tokens (the cost per token grows with the
// window, and a Mamba forgets what came before it). Prints as lm_generate.
template <typename M> static void lm_generate_windowed(M* model, const Vocab* vocab, const std::vector<int>& prompt,
                                                       int length, float temperature, int top_k, Rng* rng) {
    int V = model->config.vocab_size, maxT = model->buf.seq_len;
    std::vector<int> tokens = prompt;
    std::vector<float> logits(V);
    double start = host_clock();
    printf("---\n");
    for (int t : tokens) printf("%s", vocab->text[t].c_str());
    for (int i = 0; i < length; i++) {
        int n = (int)tokens.size(), T = n < maxT ? n : maxT;
        lm_forward(model, tokens.data() + (n - T), nullptr, 1, T, -1);
        cudaCheck(cudaMemcpy(logits.data(), model->acts.logits + (long)(T - 1) * V, V * sizeof(float), cudaMemcpyDeviceToHost));
        int next = sample_token(logits.data(), V, temperature, top_k, rng);
        tokens.push_back(next);
        printf("%s", vocab->text[next].c_str());
    }
    printf("\n---\n");
    generate_seconds = host_clock() - start;
    generate_block_ms.clear();
}

// After a generation: the time per token of the first and the last 1000
// tokens, and with an output directory one line per block of generated
// tokens in DIR/generate.jsonl (dev/plot.py draws it):
//   {"position": 1100, "gen_ms_per_token": 0.61}   position: the block's last token, prompt included
static void print_generate_timing(const char* out_dir, int prompt_len) {
    const std::vector<double>& ms = generate_block_ms;
    int per = 1000 / GENERATE_BLOCK, n = (int)ms.size() / per;  // whole thousands
    auto mean = [&](int k) { double s = 0; for (int i = k * per; i < (k + 1) * per; i++) s += ms[i]; return s / per; };
    if (n >= 2) printf("ms per token: tokens 1-1000 %.3f, tokens %d-%d %.3f\n", mean(0), n * 1000 - 999, n * 1000, mean(n - 1));
    if (!out_dir) return;
    std::string path = std::string(out_dir) + "/generate.jsonl";
    std::string text;
    for (size_t i = 0; i < ms.size(); i++) {
        char line[96];
        snprintf(line, sizeof(line), "{\"position\": %zu, \"gen_ms_per_token\": %.6f}\n", prompt_len + (i + 1) * GENERATE_BLOCK, ms[i]);
        text += line;
    }
    std::string tmp; FILE* f;
    write_atomically_begin(path.c_str(), &tmp, &f);
    fwrite_or_fail(text.data(), text.size(), f, tmp.c_str());
    write_atomically_end(path.c_str(), tmp, f);
    printf("wrote %s\n", path.c_str());
}

// Where a generating run (-G) writes its files (generate.jsonl, and
// generated.bin with -I): -o, created if needed and held while it is
// written; a -G run writes nothing else (no log, no model.bin).
static const char* generate_output_dir(const char* out_dir) {
    if (!out_dir) return nullptr;
    make_dir_or_fail(out_dir);
    take_run_lock(out_dir);
    return out_dir;
}

// B samples of `length` tokens after the prompt, each row with its own
// random stream (row 0 continues rng; the others are seeded from it). With
// one row the text streams to stdout as it is generated; with several each
// sample is printed when all are done. Greedy when temperature is 0. With
// `out`, nothing is printed and the samples go to *out (B, length); with
// sample_vocab > 0 tokens are drawn among ids 0..sample_vocab-1 only (the
// image mode's start token is never generated).
template <typename M> static void lm_generate(M* model, const Vocab* vocab, const std::vector<int>& prompt, int length,
                                              float temperature, int top_k, Rng* rng, int B,
                                              std::vector<int>* out = nullptr, int sample_vocab = 0) {
    NVTX_RANGE("generate");
    int V = model->config.vocab_size, P = (int)prompt.size();
    // the prefill runs the parallel forward over B rows: they must fit the activations
    if (B > model->buf.batch_size) fail("flag -b: %d samples at once, more than the %d rows allocated", B, model->buf.batch_size);
    lm_generate_begin(model, B);
    std::vector<Rng> rngs(B);
    rngs[0] = *rng;
    for (int b = 1; b < B; b++) rng_seed(&rngs[b], rng->state + 0x9E3779B97F4A7C15ull * b);
    std::vector<int> rows((long)B * P), next(B);
    for (int b = 0; b < B; b++) std::copy(prompt.begin(), prompt.end(), rows.begin() + (long)b * P);
    std::vector<std::string> texts(B);
    std::vector<float> logits((long)B * V);
    bool print = out == nullptr;
    int draw_vocab = sample_vocab > 0 && sample_vocab < V ? sample_vocab : V;
    if (out) out->assign((long)B * length, 0);
    if (print) printf("---\n");
    if (print && B == 1) for (int t : prompt) printf("%s", vocab->text[t].c_str());
    double start = host_clock();
    lm_prefill(model, rows.data(), B, P);
    std::vector<double> block_ms;  // the mean time per token of each block of generated tokens
    double block_start = host_clock();
    for (int i = 0; i < length; i++) {
        cudaCheck(cudaMemcpy(logits.data(), model->gen.logits, (long)B * V * sizeof(float), cudaMemcpyDeviceToHost));
        for (int b = 0; b < B; b++) {
            next[b] = sample_token(logits.data() + (long)b * V, draw_vocab, temperature, top_k, &rngs[b]);
            if (out) (*out)[(long)b * length + i] = next[b];
            else if (B == 1) { printf("%s", vocab->text[next[b]].c_str()); fflush(stdout); }
            else texts[b] += vocab->text[next[b]];
        }
        if (i + 1 < length) lm_step(model, next.data(), B);
        if ((i + 1) % GENERATE_BLOCK == 0) {
            double now = host_clock();
            block_ms.push_back((now - block_start) * 1e3 / GENERATE_BLOCK);
            block_start = now;
        }
    }
    cudaCheck(cudaDeviceSynchronize());
    generate_seconds = host_clock() - start;
    generate_block_ms = block_ms;
    if (print && B == 1) printf("\n---\n");
    std::string prompt_text;
    for (int t : prompt) prompt_text += vocab->text[t];
    for (int b = 0; b < B && B > 1 && print; b++) printf("%s%s\n---\n", prompt_text.c_str(), texts[b].c_str());
    *rng = rngs[0];
    lm_generate_end(model);
}

// Generated images (-G 1 with -I N) go to an images file (the format of
// llmc/image_data.h: label bytes 0, one class), whose shape follows N: 3 x S
// x S when N = 3 S^2 (pixel tokens in raster order, R, G, B per pixel, as
// dev/data/cifar10.py --pixels writes them, turned back into CHW records),
// else 1 x S x S when N = S^2, else 1 x 1 x N. tokens (B, N), each < 256.
static void image_shape_of(int N, int* channels, int* side_h, int* side_w) {
    int s3 = (int)lround(sqrt(N / 3.0)), s1 = (int)lround(sqrt((double)N));
    if (3 * s3 * s3 == N) { *channels = 3; *side_h = *side_w = s3; }
    else if (s1 * s1 == N) { *channels = 1; *side_h = *side_w = s1; }
    else { *channels = 1; *side_h = 1; *side_w = N; }
}

static void write_generated_images(const char* path, const std::vector<int>& tokens, int B, int N) {
    int c, h, w;
    image_shape_of(N, &c, &h, &w);
    int header[HEADER_INTS] = {0};
    header[0] = MAGIC_IMAGES; header[1] = FORMAT_VERSION;
    header[2] = B; header[3] = c; header[4] = h; header[5] = w; header[6] = 1;
    std::vector<unsigned char> records((long)B * (1 + N));
    for (int b = 0; b < B; b++) {
        unsigned char* r = &records[(long)b * (1 + N)];
        r[0] = 0;  // the label: generated images have none
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++)  // token (y*w + x)*c + ch -> CHW position (ch, y, x)
                    r[1 + ((long)ch * h + y) * w + x] = (unsigned char)tokens[(long)b * N + ((long)y * w + x) * c + ch];
    }
    std::string tmp; FILE* f;
    write_atomically_begin(path, &tmp, &f);
    fwrite_or_fail(header, HEADER_BYTES, f, tmp.c_str());
    fwrite_or_fail(records.data(), records.size(), f, tmp.c_str());
    write_atomically_end(path, tmp, f);
}

// the run line's note of the dropout rate, empty without dropout (a run
// without -D prints what it printed before the flag existed)
static std::string dropout_note(float rate) {
    if (rate <= 0.0f) return "";
    char note[48];
    snprintf(note, sizeof(note), " | dropout %g", rate);
    return note;
}

// After the model is built and initialized: resumes (-y), samples only (-G),
// or trains: validation every -v steps, samples every -s, checkpoints every
// -n (and at the end), a step line and a log line per step, the final model
// in -o. A checkpoint's generator slots hold the batch generator and the
// sampling generator. Returns the exit status.
//
// Over several ranks (distributed.h, under mpirun) -b is each rank's batch:
// every rank draws the global batch of B x ranks rows and trains on its own
// rows of it (rank r on rows r B .. r B + B - 1), the loss and the gradients
// are the global batch's (model.h), validation splits each global batch the
// same way, and only rank 0 prints, logs, samples and writes files. A
// checkpoint records the global batch. -G samples on rank 0 alone.
template <typename M> static int lm_run(M* model, TrainConfig* tc, const TokenData* train, const TokenData* val,
                                        const Vocab* vocab) {
    ModelBuffers* m = &model->buf;
    int B = tc->B, T = tc->T, G = B * dist.world;  // G: the global batch
    if (tc->generate_only && dist.rank != 0) return 0;
    AdamWConfig opt = {tc->lr, 0.9f, 0.99f, 1e-8f, tc->weight_decay, tc->grad_clip};
    int image_len = tc->image_len, start_token = vocab->size - 1;  // with -I: the start token follows the data's vocabulary
    std::vector<int> prompt = image_len ? std::vector<int>(1, start_token) : tokenize_prompt(vocab, tc->prompt);
    Rng train_rng, sample_rng;
    rng_seed(&train_rng, tc->seed);
    rng_seed(&sample_rng, tc->seed + 1);
    int start_step = 0, run_seed = tc->seed;  // a resumed run's seed is its checkpoint's
    // where this run writes (null: nowhere), held from here to its exit; a
    // generating run holds -o only to read its checkpoint, and later to write its files
    const char* out_dir = nullptr;
    if (tc->generate_only) {
        if (tc->resume) open_output_dir(tc->out_dir, 1, false);
    } else {
        out_dir = open_output_dir(tc->out_dir, tc->resume, tc->max_steps == 0);
    }
    std::vector<int> found_steps = out_dir ? checkpoint_steps(out_dir) : std::vector<int>();
    if (tc->resume) {
        std::string path;
        CheckpointState s = load_newest_checkpoint(m, tc->out_dir, &path);
        if (s.T != T || (s.B != G && dist.world == 1))
            fail("%s: written with -b %d -t %d, resumed with -b %d -t %d", path.c_str(), s.B, s.T, B, T);
        if (s.B != G)
            fail("%s: written with a global batch of %d, resumed with -b %d on %d ranks (%d)", path.c_str(), s.B, B,
                 dist.world, G);
        if (!tc->generate_only)  // (generating from a checkpoint needs neither its seed nor its data)
            check_resume(path.c_str(), &s, s.seed, tc->seed_given, tc->seed, train->num_tokens, tc->train_path, "tokens",
                         tc->max_steps, "-x");
        train_rng.state = s.train_rng;
        sample_rng.state = s.sample_rng;
        start_step = s.step;
        if (s.seed >= 0) run_seed = s.seed;
    }
    model->dropout.rate = tc->dropout;
    // the masks: the checkpoint's seed and step resume them; each rank's are its own (the
    // run's seed mixed with the rank; rank 0's are a single run's), as the vision trainers'
    model->dropout.seed = (uint64_t)run_seed + (uint64_t)dist.rank * 0x9E3779B97F4A7C15ull;
    if (!tc->generate_only)
        check_ranks_alike(m, {B, T, tc->max_steps, start_step, dist.zero, train->num_tokens, val->num_tokens, tc->task,
                              image_len, (long)train_rng.state, run_seed});
    if (tc->generate_only && image_len) {  // whole images, B at once, into DIR/generated.bin
        if (!tc->out_dir) fail("flag -G: with -I the generated images go to -o DIR (DIR/generated.bin); give -o");
        if (start_token > 256) fail("flag -G: %s has %d tokens; images need pixel values below 256", tc->vocab_path, start_token);
        std::vector<int> tokens;
        lm_generate(model, vocab, prompt, image_len, tc->temperature, tc->top_k, &sample_rng, B, &tokens, start_token);
        const char* gen_dir = generate_output_dir(tc->out_dir);
        std::string path = std::string(gen_dir) + "/generated.bin";
        write_generated_images(path.c_str(), tokens, B, image_len);
        int c, h, w;
        image_shape_of(image_len, &c, &h, &w);
        printf("generated %d images of %d tokens (%d x %d x %d) in %.2f s (%.0f tokens/s) -> %s | peak memory %.0f MiB\n",
               B, image_len, c, h, w, generate_seconds, (double)image_len * B / generate_seconds, path.c_str(),
               peak_memory_mib());
        print_generate_timing(gen_dir, 1);
        return 0;
    }
    if (tc->generate_only) {
        if (tc->windowed) {
            if (B != 1) fail("flag -W: generates one row; -b %d asks for more", B);
            lm_generate_windowed(model, vocab, prompt, tc->gen_tokens, tc->temperature, tc->top_k, &sample_rng);
        } else {
            lm_generate(model, vocab, prompt, tc->gen_tokens, tc->temperature, tc->top_k, &sample_rng, B);
        }
        printf("generated %d tokens x %d rows in %.2f s (%.0f tokens/s, prompt of %zu prefilled) | peak memory %.0f MiB\n",
               tc->gen_tokens, B, generate_seconds, (double)tc->gen_tokens * B / generate_seconds, prompt.size(),
               peak_memory_mib());
        print_generate_timing(generate_output_dir(tc->out_dir), (int)prompt.size());
        return 0;
    }
    if (tc->task) {
        std::string sizes = (train->num_sequences ? "train " + std::to_string(train->num_sequences) + " sequences, " : "") +
                            "val " + std::to_string(val->num_sequences);  // (evaluating only, nothing of -i is read)
        std::string chunks = T < val->seq_len ? " in chunks of " + std::to_string(T) : "";  // (a chunked evaluation)
        printf("batch %d x %d%s | steps %d | lr %g warmup %d final x%g | wd %g | clip %g | %s: %s (%s), targets per "
               "sequence %d%s\n",
               B, val->seq_len, chunks.c_str(), tc->max_steps, opt.lr, tc->warmup, tc->final_frac, opt.weight_decay, opt.grad_clip,
               task_name(tc->task), sizes.c_str(), tc->val_batches ? "the first -m x -b validated" : "all validated",
               val->targets_per_sequence, dropout_note(tc->dropout).c_str());
    } else
        printf("batch %d x %d | steps %d | lr %g warmup %d final x%g | wd %g | clip %g | train %ld tokens, val %ld%s\n",
               B, T, tc->max_steps, opt.lr, tc->warmup, tc->final_frac, opt.weight_decay, opt.grad_clip,
               train->num_tokens, val->num_tokens, dropout_note(tc->dropout).c_str());
    if (dist.on) {
        printf("data parallel: %d ranks x batch %d = global batch %d | %s\n", dist.world, B, G,
               m->zero ? "ZeRO-1: AdamW state sharded" : "gradients all-reduced");
        if (!tc->task && !image_len && token_data_num_val_batches(val, G, T) < 1)
            fail("%s: %ld tokens, too few for one %d x %d validation batch (%d ranks x -b %d)", tc->val_path,
                 val->num_tokens, G, T, dist.world, B);
    }
    if (image_len)
        printf("images of %d tokens: %ld train, %ld val (%s) | window = start token %d + an image | bits/dim = val loss / ln 2\n",
               image_len, token_data_num_images(train, image_len), token_data_num_images(val, image_len),
               tc->val_batches ? "the first -m x -b validated" : "all validated", start_token);

    Logger logger;
    logger_open(&logger, out_dir, start_step);
    StepRunner runner;
    step_runner_init(&runner, m);
    std::vector<int> inputs((long)G * T), targets((long)G * T);  // the global batch; this rank trains on its rows
    const int *my_inputs = inputs.data() + dist_rows(B) * T, *my_targets = targets.data() + dist_rows(B) * T;
    double run_start = host_clock(), train_seconds = 0.0;
    float last_val = NAN;
    TaskScore last_score = {NAN, NAN, NAN};
    for (int step = start_step; step <= tc->max_steps; step++) {
        bool last = step == tc->max_steps;
        if ((tc->val_every > 0 && step % tc->val_every == 0) || last) {
            if (tc->task) {
                last_score = lm_validate_task(model, val, B, T, tc->val_batches);
                print_task_score("", last_score, val);
                printf("\n");
                log_task_score(&logger, step, last_score, host_clock() - run_start);
            } else if (image_len) {
                last_val = (float)lm_validate_images(model, val, B, image_len, start_token, (long)tc->val_batches * G);
                printf("val loss %f | bits/dim %.4f\n", last_val, bits_per_dim(last_val));
                log_eval(&logger, step, "val_loss", last_val, host_clock() - run_start);
                log_eval(&logger, step, "val_bits_per_dim", (float)bits_per_dim(last_val), host_clock() - run_start);
            } else {
                last_val = lm_validate(model, val, B, T, tc->val_batches);
                if (tc->train_eval) {  // the same number of tokens from the training set, evaluated as val is
                    float train_loss = lm_validate(model, train, B, T, tc->val_batches);
                    printf("val loss %f | train loss %f\n", last_val, train_loss);
                    log_eval(&logger, step, "train_eval_loss", train_loss, host_clock() - run_start);
                } else {
                    printf("val loss %f\n", last_val);
                }
                log_eval(&logger, step, "val_loss", last_val, host_clock() - run_start);
            }
        }
        // (images are not sampled during training: -G 1 generates them; task sequences are not sampled)
        if (((tc->sample_every > 0 && step > 0 && step % tc->sample_every == 0) || last) && tc->gen_tokens > 0 &&
            !image_len && !tc->task && dist.rank == 0)
            lm_generate(model, vocab, prompt, tc->gen_tokens, tc->temperature, tc->top_k, &sample_rng, 1);
        if (tc->out_dir && step > start_step && ((tc->checkpoint_every > 0 && step % tc->checkpoint_every == 0) || last))
            save_checkpoint(m, out_dir, step, train_rng.state, sample_rng.state, G, T, run_seed, train->num_tokens,
                            found_steps);  // (every rank: out_dir is rank 0's)
        if (last) break;

        NVTX_RANGE("step");
        double t0 = host_clock();
        step_profile_begin();
        if (tc->task) task_data_train_batch(train, &train_rng, G, inputs.data(), targets.data());
        else if (image_len) token_data_image_train_batch(train, &train_rng, G, T, start_token, inputs.data(), targets.data());
        else token_data_train_batch(train, &train_rng, G, T, inputs.data(), targets.data());
        model_upload_batch(m, my_inputs, (long)B * T, my_targets, (long)B * T);
        m->in_train_step = 1;  // the batch is on the device; no round trip to the host until step_run's one copy
        float lr = learning_rate(opt.lr, step, tc->warmup, tc->max_steps, tc->final_frac);
        float norm = step_run(&runner, m, &opt, lr, step + 1, [&]() {
            lm_forward(model, my_inputs, my_targets, B, T, step);
            lm_backward(model, B, T);
        });
        m->in_train_step = 0;
        check_finite(out_dir, step + 1, m->mean_loss, norm);
        step_profile_end(step + 1);
        double seconds = host_clock() - t0;
        train_seconds += seconds;
        print_step(step + 1, start_step, tc->max_steps, m->mean_loss, lr, norm, seconds, (long)G * T, "tok/s", train_seconds);
        log_train(&logger, step + 1, m->mean_loss, lr, norm, "tokens_per_s", (double)G * T / seconds, host_clock() - run_start);
    }
    step_runner_free(&runner, m);
    logger_close(&logger);
    if (out_dir) {
        save_model_file(m, out_dir, tc->max_steps);
        checkpoint_prune(out_dir, 3, std::vector<int>());  // the run ended well: the ones it found may go too
    }
    if (tc->task) {
        print_task_score("final ", last_score, val);
        printf(" | %.1f s | peak memory %.0f MiB\n", host_clock() - run_start, peak_memory_mib());
    } else if (image_len)
        printf("final val loss %f | bits/dim %.4f | %.1f s | peak memory %.0f MiB\n", last_val, bits_per_dim(last_val),
               host_clock() - run_start, peak_memory_mib());
    else
        printf("final val loss %f | %.1f s | peak memory %.0f MiB\n", last_val, host_clock() - run_start, peak_memory_mib());
    return 0;
}
