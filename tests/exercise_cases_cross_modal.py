"""Correct and wrong answers to the cross-modal exercise (notebooks/05_paradigms/cross_modal.ipynb), for
tests/test_exercises.py: check_label_free_kd_loss must accept the first and reject each of the second with its
hint."""
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- correct
def with_log_softmax(student_logits, teacher_logits_table, index, temperature):
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits_table[index] / temperature, dim=1)
    return temperature ** 2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()


def with_kl_div(student_logits, teacher_logits_table, index, temperature):
    teacher = F.softmax(teacher_logits_table[index] / temperature, dim=1)
    student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean") * temperature ** 2


def with_a_loop_over_the_batch(student_logits, teacher_logits_table, index, temperature):
    total = 0.0
    for z_s, i in zip(student_logits, index):
        p_t = torch.softmax(teacher_logits_table[i] / temperature, 0)
        total = total + (p_t * (p_t.log() - torch.log_softmax(z_s / temperature, 0))).sum()
    return temperature ** 2 * total / len(index)


# ----------------------------------------------------------------------------- wrong
def by_batch_position(student_logits, teacher_logits_table, index, temperature):
    return with_log_softmax(student_logits, teacher_logits_table[:len(student_logits)],
                            torch.arange(len(student_logits)), temperature)


def reversed_kl(student_logits, teacher_logits_table, index, temperature):
    teacher = F.log_softmax(teacher_logits_table[index] / temperature, dim=1)
    student = F.softmax(student_logits / temperature, dim=1)
    return F.kl_div(teacher, student, reduction="batchmean") * temperature ** 2


def without_t_squared(student_logits, teacher_logits_table, index, temperature):
    return with_kl_div(student_logits, teacher_logits_table, index, temperature) / temperature ** 2


def summed_over_the_batch(student_logits, teacher_logits_table, index, temperature):
    return with_kl_div(student_logits, teacher_logits_table, index, temperature) * len(index)


def with_kdtools(student_logits, teacher_logits_table, index, temperature):
    from kdtools.losses import kd_loss
    return kd_loss(student_logits, teacher_logits_table[index], temperature)


def with_the_whole_table(student_logits, teacher_logits_table, index, temperature):
    return with_log_softmax(student_logits, teacher_logits_table, slice(None), temperature)


def not_implemented(student_logits, teacher_logits_table, index, temperature):
    raise NotImplementedError


CHECKER_CASES = {
    "check_label_free_kd_loss": {
        "correct": [with_log_softmax, with_kl_div, with_a_loop_over_the_batch],
        "wrong": [
            (by_batch_position, "you took the first B rows"),
            (reversed_kl, "the wrong way round"),
            (without_t_squared, "multiply by T²"),
            (summed_over_the_batch, "you summed over the batch"),
            (with_kdtools, "write the loss with log_softmax"),
            (with_the_whole_table, "look up the batch's teacher rows first"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
