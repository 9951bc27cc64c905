/*
Machine-readable training log: one JSON object per line in DIR/log.jsonl.
  {"step": 10, "train_loss": 2.31, "lr": 0.001, "grad_norm": 0.83, "tokens_per_s": 5120, "elapsed_s": 12.5}
  {"step": 100, "val_loss": 2.05, "elapsed_s": 130.2}
The key of the throughput and of the evaluation is the caller's (tokens_per_s
or images_per_s; val_loss or test_acc). A resumed run drops the lines after
its checkpoint's step, so the log reads like one uninterrupted run
(elapsed_s restarts from 0 at the resume).
dev/plot.py draws curves from these files.
*/
#pragma once

#include <string>
#include <vector>
#include "utils.h"

typedef struct {
    FILE* f;  // null: logging off
} Logger;

static void logger_open(Logger* lg, const char* dir, int resume_step) {
    lg->f = nullptr;
    if (!dir) return;
    std::string path = std::string(dir) + "/log.jsonl";
    std::vector<std::string> keep;
    if (resume_step > 0) {
        FILE* old = fopen(path.c_str(), "r");
        if (old) {
            char line[4096];
            while (fgets(line, sizeof(line), old)) {
                int step;
                if (sscanf(line, "{\"step\": %d", &step) != 1) continue;
                // training lines up to the checkpoint's step; evaluations before it (the
                // resumed run evaluates at its first step again)
                bool train = strstr(line, "\"train_loss\"") != nullptr;
                if (train ? step <= resume_step : step < resume_step) keep.push_back(line);
            }
            fclose(old);
        }
    }
    lg->f = fopen_or_fail(path.c_str(), "w");
    for (const std::string& l : keep) fputs(l.c_str(), lg->f);
    fflush(lg->f);
}

static void log_train(Logger* lg, int step, float loss, float lr, float norm, const char* rate_key, float rate,
                      double elapsed) {
    if (!lg->f) return;
    fprintf(lg->f, "{\"step\": %d, \"train_loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.6g, \"%s\": %.1f, \"elapsed_s\": %.3f}\n",
            step, loss, lr, norm, rate_key, rate, elapsed);
    fflush(lg->f);
}

static void log_eval(Logger* lg, int step, const char* key, float value, double elapsed) {
    if (!lg->f) return;
    fprintf(lg->f, "{\"step\": %d, \"%s\": %.6f, \"elapsed_s\": %.3f}\n", step, key, value, elapsed);
    fflush(lg->f);
}

static void logger_close(Logger* lg) {
    if (lg->f) fclose(lg->f);
    lg->f = nullptr;
}
