/*
What the GPT (train_gpt.cu) and the Transformer++ (train_gpt_plus.cu)
share: their config, its seven slots in model files and checkpoints (the
model kind tells the two apart: MODEL_GPT, MODEL_GPT_PLUS, so that each
program refuses the other's files), their generation context, and the
parts of their main: presets, flags, data, the config from the flags or
from the model file of -e, and the line that describes the model.
*/
#pragma once

#include "attention.cuh"
#include "checkpoint.h"
#include "lm_trainer.h"
#include "model.h"
#include "trainer.h"
#include "utils.h"

typedef struct {
    int max_seq_len;  // maxT: the context (the GPT's position table)
    int vocab_size;   // V
    int num_layers;   // L
    int num_heads;    // NH
    int channels;     // C
    int ffn;          // the MLP's hidden width (the Transformer++'s: the SwiGLU width H)
} GPTConfig;

// the seven config slots of model files and checkpoints
static const char* const gpt_slot_names[CONFIG_SLOTS] = {"max_seq_len", "vocab_size", "num_layers", "num_heads",
                                                         "channels", "ffn", "num_params"};

// the first six slots (model_build fills in the seventh, the parameter count)
static void gpt_config_slots(GPTConfig c, int* slots) {
    int s[CONFIG_SLOTS - 1] = {c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels, c.ffn};
    for (int i = 0; i < CONFIG_SLOTS - 1; i++) slots[i] = s[i];
}

// the heads must split the channels (the flags -C/-H, or a model file's slots)
static void gpt_check_heads(GPTConfig c) {
    if (c.channels % c.num_heads != 0) fail("flag -C/-H: channels %d are not divisible by heads %d", c.channels, c.num_heads);
}

// Generation's context: the positions a KV cache holds, maxT or the
// activations' length if shorter
static int gpt_context(GPTConfig c, const ModelBuffers* m) {
    return c.max_seq_len < m->seq_len ? c.max_seq_len : m->seq_len;
}

// The start of main: the presets (the write-up's configuration, and one that
// trains in minutes on 2 CPU cores), the flags over them (model_flags: the
// help of the shape flags -L -C -H -F), the data.
static void gpt_parse_flags_and_data(int argc, char** argv, TrainConfig* tc, TokenData* train, TokenData* val,
                                     Vocab* vocab, const char* model_flags) {
    //                        L  C    B   T    steps warmup val  lr
    LMPreset presets[2] = {{4, 256, 64, 256, 5000, 0, 250, 1e-3f},
                           {3, 128, 16, 128, 1500, 50, 250, 2e-3f}};
    *tc = default_lm_config();
    tc->H = 4;
    parse_train_flags(argc, argv, tc, presets, model_flags, "LCHF");
    print_preset(tc->preset);
    load_lm_data(tc, train, val, vocab);
}

// The run's config: the model file's of -e, which must hold a model of this
// kind (shape flags given too must agree with it) and, for the GPT, a
// position table as long as the run's sequences; else the flags' with the
// MLP width ffn.
static GPTConfig gpt_run_config(const TrainConfig* tc, const Vocab* vocab, int kind, int ffn) {
    GPTConfig config = {tc->T, vocab->size, tc->L, tc->H, tc->C, ffn};
    if (tc->init_path) {  // the model file decides the shape
        int s[CONFIG_SLOTS];
        model_file_config(tc->init_path, kind, s);
        config = {s[0], s[1], s[2], s[3], s[4], s[5]};
        check_shape_flag_int(tc, 'L', tc->L, "num_layers", config.num_layers);
        check_shape_flag_int(tc, 'C', tc->C, "channels", config.channels);
        check_shape_flag_int(tc, 'H', tc->H, "num_heads", config.num_heads);
        check_shape_flag_int(tc, 'F', tc->F, "ffn", config.ffn);
        check_model_vocab(tc, config.vocab_size, vocab);
        // the GPT's learned positions end at maxT; the Transformer++'s rotary positions do not, and it
        // evaluates task files of any length (its maxT is then the length it was trained at)
        if (kind == MODEL_GPT || !tc->task) check_length_fits(tc, config.max_seq_len);
    }
    return config;
}

// the length the activations are sized for: generating only, the whole context
static int gpt_run_length(const TrainConfig* tc, GPTConfig c) { return tc->generate_only ? c.max_seq_len : tc->T; }

// The line after the preset's: the backend, the model (name, and ffn_name
// for its MLP width), its size, and the attention variant for activations
// of tc->B rows of length T.
static void gpt_print_model(const char* name, const char* ffn_name, GPTConfig c, long num_parameters,
                            const TrainConfig* tc, int T) {
    printf("backend %s | %s L %d C %d H %d %s %d | vocab %d | max T %d | %ld parameters | attention %s\n", BACKEND_NAME,
           name, c.num_layers, c.channels, c.num_heads, ffn_name, c.ffn, c.vocab_size, c.max_seq_len, num_parameters,
           attention_uses_tiled(tc->B, T, c.channels, c.num_heads) ? "tiled" : "materialized");
}
