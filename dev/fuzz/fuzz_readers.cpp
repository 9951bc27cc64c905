/*
libFuzzer harness for the project's file readers: the parsers behind every
tokens, vocabulary, task, model, checkpoint and reference-state file, fed the
fuzzer's bytes directly. A reader must either accept the bytes or refuse
them through fail() (which this harness turns into an exception); a crash,
a hang or a sanitizer report is a bug. FUZZ_TARGET picks the reader:
tokens, vocab, task, model, checkpoint, state, images, or files: the bytes
as a file on disk, through every loader that reads a file's header first
and its size against it (tokens, vocabulary, task, images, a model file's
config, a checkpoint's checks). Run by dev/fuzz.sh.
*/
#include "../../llmc/cuda_common.h"
#include "../../llmc/dataloader.h"
#include "../../llmc/checkpoint.h"
#include "../../llmc/testing.h"
#include "../../llmc/image_data.h"

#include <stdexcept>
#include <unistd.h>

struct ReaderRefused {};
static void refuse(const char*) { throw ReaderRefused{}; }

// the model a checkpoint or model file is checked against: a tiny GPT
// (maxT 8, V 5, L 1, H 1, C 4, F 8: 257 parameters)
static const int expected_config[CONFIG_SLOTS] = {8, 5, 1, 1, 4, 8, 257};
static const char* const slot_names[CONFIG_SLOTS] = {"a", "b", "c", "d", "e", "f", "P"};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const char* target = getenv("FUZZ_TARGET") ? getenv("FUZZ_TARGET") : "tokens";
    fail_hook = refuse;
    const char* path = "<fuzz input>";
    long n = (long)size;
    try {
        if (!strcmp(target, "tokens")) {
            TokenData d;
            token_data_parse(&d, path, data, n);
        } else if (!strcmp(target, "task")) {
            TokenData d;
            task_data_parse(&d, path, data, n);
        } else if (!strcmp(target, "vocab")) {
            Vocab v;
            vocab_parse(&v, path, data, n);
        } else if (!strcmp(target, "model")) {
            int kind, config[CONFIG_SLOTS];
            const float* p = model_file_parse(path, data, n, &kind, config, 0, nullptr, nullptr);
            volatile float sum = 0.0f;  // touch every parameter the parser vouched for
            for (int i = 0; i < config[CONFIG_SLOTS - 1]; i++) sum = sum + p[i];
            model_file_parse(path, data, n, &kind, config, MODEL_GPT, expected_config, slot_names);
        } else if (!strcmp(target, "checkpoint")) {
            CheckpointState s;
            s.kind = MODEL_GPT;
            memcpy(s.config, expected_config, sizeof(expected_config));
            const float* p = checkpoint_parse(path, data, n, &s, slot_names);
            volatile float sum = 0.0f;
            for (int i = 0; i < 3 * expected_config[CONFIG_SLOTS - 1]; i++) sum = sum + p[i];
        } else if (!strcmp(target, "images")) {
            ImageData d;
            image_data_parse(&d, path, data, n);
        } else if (!strcmp(target, "files")) {
            static std::string file = "build/fuzz/files_input_" + std::to_string(getpid()) + ".bin";  // dev/fuzz.sh runs in the repository root
            FILE* f = fopen(file.c_str(), "wb");
            if (!f || fwrite(data, 1, size, f) != size) abort();
            fclose(f);
            const char* p = file.c_str();
            try { TokenData d; token_data_load(&d, p); } catch (ReaderRefused&) {}
            try { TokenData d; task_data_load(&d, p); } catch (ReaderRefused&) {}
            try { TokenData d; task_data_open(&d, p); fclose(d.file); } catch (ReaderRefused&) {}
            try { Vocab v; vocab_load(&v, p); } catch (ReaderRefused&) {}
            try { ImageData d; image_data_load(&d, p); } catch (ReaderRefused&) {}
            try { int config[CONFIG_SLOTS]; model_file_config(p, MODEL_GPT, config); } catch (ReaderRefused&) {}
            checkpoint_problem(p);
        } else if (!strcmp(target, "state")) {
            RefState s;
            ref_state_parse(&s, path, data, n);
        } else {
            fprintf(stderr, "FUZZ_TARGET must be tokens, vocab, task, model, checkpoint, state, images or files\n");
            abort();
        }
    } catch (ReaderRefused&) {
    }
    return 0;
}
