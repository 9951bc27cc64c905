/*
Machine-readable training log: one JSON object per line in DIR/log.jsonl.
  {"step": 10, "train_loss": 2.31, "lr": 0.001, "grad_norm": 0.83, "tokens_per_s": 5120, "elapsed_s": 12.5}
  {"step": 100, "val_loss": 2.05, "elapsed_s": 130.2}
The key of the throughput and of the evaluation is the caller's (tokens_per_s
or images_per_s; val_loss or test_acc). A value that is not finite is
written null, so that every line is JSON.

The log is only ever appended to, one whole line per write, so that a run
that fails or is killed leaves every line it found, and every line it wrote
is complete. A resumed run first appends
  {"resume_step": 20}
after which its lines replace what the log said of the steps after its
checkpoint: a reader drops the training lines before it whose step is above
20 and the evaluation lines whose step is 20 or above (the resumed run
evaluates at its first step again), and the log reads like one
uninterrupted run (elapsed_s restarts from 0 at the resume).
dev/reference/formats.py's read_log does this; dev/plot.py draws curves
from it.
*/
#pragma once

#include <fcntl.h>
#include <string>
#include <unistd.h>
#include "utils.h"

typedef struct {
    int fd;  // -1: logging off
    std::string path;
} Logger;

// one whole line, in one write
static void logger_write(Logger* lg, const char* fmt, ...) {
    if (lg->fd < 0) return;
    va_list ap;
    va_start(ap, fmt);
    std::string line = vformat(fmt, ap);
    va_end(ap);
    if (write(lg->fd, line.data(), line.size()) != (ssize_t)line.size())
        fail("%s: write failed (%s)", lg->path.c_str(), strerror(errno));
}

// Opens dir/log.jsonl for appending (dir null: logging off); a resumed run
// (resume_step > 0) marks where its lines start.
static void logger_open(Logger* lg, const char* dir, int resume_step) {
    lg->fd = -1;
    if (!dir) return;
    lg->path = std::string(dir) + "/log.jsonl";
    lg->fd = open(lg->path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (lg->fd < 0) fail("%s: cannot open (%s)", lg->path.c_str(), strerror(errno));
    if (resume_step > 0) logger_write(lg, "{\"resume_step\": %d}\n", resume_step);
}

// a number as JSON has it: printf's fmt, or null when it is not finite (JSON has no nan or inf)
static std::string json_number(const char* fmt, double value) {
    if (!std::isfinite(value)) return "null";
    char text[64];
    snprintf(text, sizeof(text), fmt, value);
    return text;
}

static void log_train(Logger* lg, int step, float loss, float lr, float norm, const char* rate_key, float rate,
                      double elapsed) {
    logger_write(lg, "{\"step\": %d, \"train_loss\": %s, \"lr\": %s, \"grad_norm\": %s, \"%s\": %s, \"elapsed_s\": %.3f}\n",
                 step, json_number("%.6f", loss).c_str(), json_number("%.6g", lr).c_str(), json_number("%.6g", norm).c_str(),
                 rate_key, json_number("%.1f", rate).c_str(), elapsed);
}

static void log_eval(Logger* lg, int step, const char* key, float value, double elapsed) {
    logger_write(lg, "{\"step\": %d, \"%s\": %s, \"elapsed_s\": %.3f}\n", step, key, json_number("%.6f", value).c_str(),
                 elapsed);
}

static void logger_close(Logger* lg) {
    if (lg->fd >= 0) close(lg->fd);
    lg->fd = -1;
}
