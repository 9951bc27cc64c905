/*
The last layers of every language model (train_gpt.cu, train_gpt_plus.cu,
train_mamba.cu, train_hybrid.cu), forward, backward and one generation step:
  lnf = norm(x);  logits = lnf @ head_w^T + head_b;  loss = mean cross-entropy(logits, targets)
The mean is over the positions that have a target: a negative target
(TARGET_IGNORED, a task file's positions without one) adds neither loss
nor gradient; text has a target at every position.
The norm is a LayerNorm with weight and bias (the GPT's, the Mamba's, the
hybrid's), or an RMSNorm with weight only (the Transformer++'s), and the head
has a bias or not: LMHeadParams says which by its null pointers. A model
passes views of its own tensors (lm_head_params and lm_head_acts for the
field names the models share).
*/
#pragma once
#include "cuda_common.h"
#include "layernorm.cuh"
#include "rmsnorm.cuh"
#include "matmul.cuh"
#include "crossentropy.cuh"
#include "model.h"

// the parameters, or their gradients
typedef struct {
    float* lnf_w;   // (C)     the final norm's weight
    float* lnf_b;   // (C)     ... and bias; null: the norm is an RMSNorm
    float* head_w;  // (V, C)
    float* head_b;  // (V)     null: a head without bias
} LMHeadParams;

// what the forward keeps for the backward, BT = B * T rows
typedef struct {
    float* lnf;       // (BT, C)  the final norm's output
    float* lnf_mean;  // (BT)     LayerNorm's means (not read with an RMSNorm)
    float* lnf_rstd;  // (BT)
    float* logits;    // (BT, V)
    float* probs;     // (BT, V)
    float* losses;    // (BT)
} LMHeadActs;

// the views of a model's tensors named lnf_w, lnf_b, head_w, head_b (a
// LayerNorm and a head with bias), and of its activations lnf .. losses
template <typename P> static LMHeadParams lm_head_params(const P& p) {
    LMHeadParams r = {p.lnf_w, p.lnf_b, p.head_w, p.head_b};
    return r;
}
template <typename A> static LMHeadActs lm_head_acts(const A& a) {
    LMHeadActs r = {a.lnf, a.lnf_mean, a.lnf_rstd, a.logits, a.probs, a.losses};
    return r;
}

// a.logits (BT, V) from x (BT, C), the last block's output; with targets
// (m->targets on the device), also the losses and their mean over the
// positions with a target (model_mean_target_loss)
static void lm_head_forward(cublasHandle_t h, ModelBuffers* m, const LMHeadParams& p, const LMHeadActs& a,
                            const float* x, int BT, int C, int V, bool with_targets) {
    {
        NVTX_RANGE("lnf_forward");
        if (p.lnf_b) layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, p.lnf_w, p.lnf_b, BT, C);
        else rmsnorm_forward(a.lnf, a.lnf_rstd, x, p.lnf_w, BT, C);
    }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.lnf, p.head_w, p.head_b, BT, C, V); }
    if (with_targets) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, m->targets, BT, V);
        model_mean_target_loss(m, a.losses, m->targets, BT);
    }
}

// The backward of the mean loss of the last forward with targets: dx (BT, C)
// = its gradient w.r.t. x (overwritten); g: the gradients (accumulated).
// Scratch: dlogits (BT, V) and dlnf (BT, C), the gradient w.r.t. a.lnf.
static void lm_head_backward(cublasHandle_t h, ModelBuffers* m, const LMHeadParams& p, const LMHeadParams& g,
                             const LMHeadActs& a, const float* x, float* dx, float* dlogits, float* dlnf, int BT, int C,
                             int V) {
    {
        NVTX_RANGE("head_backward");
        crossentropy_backward_device(dlogits, a.probs, m->targets, m->dloss, BT, V);
        matmul_backward(h, dlnf, g.head_w, g.head_b, dlogits, a.lnf, p.head_w, m->ones, BT, C, V);
    }
    {
        NVTX_RANGE("lnf_backward");  // the norm's backward adds into dx
        cudaCheck(cudaMemsetAsync(dx, 0, (long)BT * C * sizeof(float), main_stream));
        if (p.lnf_b) layernorm_backward(dx, g.lnf_w, g.lnf_b, dlnf, x, p.lnf_w, a.lnf_mean, a.lnf_rstd, BT, C);
        else rmsnorm_backward(dx, g.lnf_w, dlnf, x, p.lnf_w, a.lnf_rstd, BT, C);
    }
}

// one generation step's logits (B, V) from x (B, C), the stack's output for
// each row's newest token; lnf (B, C) scratch
static void lm_head_step(cublasHandle_t h, const LMHeadParams& p, float* logits, float* lnf, const float* x, int B,
                         int C, int V) {
    if (p.lnf_b) layernorm_forward(lnf, nullptr, nullptr, x, p.lnf_w, p.lnf_b, B, C);
    else rmsnorm_forward(lnf, nullptr, x, p.lnf_w, B, C);
    matmul_forward(h, logits, lnf, p.head_w, p.head_b, B, C, V);
}
