"""Correct and wrong answers to the teacher-assistant exercise (notebooks/05_paradigms/teacher_assistant.ipynb),
for tests/test_exercises.py: check_pick_assistant must accept the first and reject each of the second with its
hint."""
import torch


# ----------------------------------------------------------------------------- correct
def with_argmin(teacher_acc, student_acc, assistant_accs):
    return torch.argmin((assistant_accs - (teacher_acc + student_acc) / 2).abs())


def as_python_int(teacher_acc, student_acc, assistant_accs):
    target = (teacher_acc + student_acc) / 2
    distances = [abs(a - target) for a in assistant_accs.tolist()]
    return distances.index(min(distances))


# ----------------------------------------------------------------------------- wrong
def the_best_assistant(teacher_acc, student_acc, assistant_accs):
    return torch.argmax(assistant_accs)


def closest_to_the_teacher(teacher_acc, student_acc, assistant_accs):
    return torch.argmin((assistant_accs - teacher_acc).abs())


def closest_to_the_student(teacher_acc, student_acc, assistant_accs):
    return torch.argmin((assistant_accs - student_acc).abs())


def signed_difference(teacher_acc, student_acc, assistant_accs):
    return torch.argmin(assistant_accs - (teacher_acc + student_acc) / 2)


def the_accuracy_instead_of_the_index(teacher_acc, student_acc, assistant_accs):
    return assistant_accs[with_argmin(teacher_acc, student_acc, assistant_accs)]


def not_implemented(teacher_acc, student_acc, assistant_accs):
    raise NotImplementedError


CHECKER_CASES = {
    "check_pick_assistant": {
        "correct": [with_argmin, as_python_int],
        "wrong": [
            (the_best_assistant, "you picked the most accurate assistant"),
            (closest_to_the_teacher, "closest to the TEACHER"),
            (closest_to_the_student, "closest to the STUDENT"),
            (signed_difference, "use the absolute distance"),
            (the_accuracy_instead_of_the_index, "expected"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
