"""``braggscope completion bash``: a bash completion script for the ``braggscope`` command.

The script is made once from the parser (every command's options and choices, for the commands
whose extras are installed) and is static: pressing Tab runs no Python. Install it with::

    braggscope completion bash > ~/.local/share/bash-completion/completions/braggscope

(or ``eval "$(braggscope completion bash)"`` in ``~/.bashrc``; zsh: after ``autoload bashcompinit;
bashcompinit``).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex

from braggscope.core.compat import parser_actions

__all__ = ["configure", "bash_script", "command_tree"]


def configure(parser) -> None:
    """Add the shell argument of ``braggscope completion``."""
    parser.add_argument("shell", choices=("bash",), help="the shell the script is for")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from braggscope.app.cli.main import COMMANDS, NEEDS, build_parser  # main imports this module by name

    usable = [name for name in COMMANDS
              if all(importlib.util.find_spec(module) for module in NEEDS.get(name, ()))]
    print(bash_script(build_parser(usable)))
    return 0


def command_tree(parser: argparse.ArgumentParser, path: str = "braggscope") -> tuple[dict, dict, dict]:
    """The words completed after each sub-command path of ``parser``.

    Returns ``(options, commands, choices)``: ``{path: [--option, ...]}``, ``{path: [sub-command or
    positional choice, ...]}`` and ``{path + " " + option: [value, ...]}``, where ``path`` is the words
    typed so far (``"braggscope"``, ``"braggscope reduce sxdm"``).
    """
    options, commands, choices = {path: []}, {path: []}, {}
    for action in parser_actions(parser):
        if isinstance(action.choices, dict):  # sub-commands, each with its parser
            for name, sub in action.choices.items():
                commands[path].append(name)
                for mine, theirs in zip((options, commands, choices), command_tree(sub, f"{path} {name}")):
                    mine.update(theirs)
        elif action.option_strings:
            options[path].extend(o for o in action.option_strings if o.startswith("--") or
                                 len(action.option_strings) == 1)
            for option in action.option_strings if action.choices else ():
                choices[f"{path} {option}"] = [str(c) for c in action.choices]
        elif action.choices:  # a positional with choices (``demo sxdm|bcdi``)
            commands[path].extend(str(c) for c in action.choices)
    return options, commands, choices


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion script of ``parser`` (see the module docstring)."""
    options, commands, choices = command_tree(parser)

    def table(name, mapping):
        rows = "\n".join(f"    [{shlex.quote(key)}]={shlex.quote(' '.join(value))}" for key, value in mapping.items())
        return f"declare -gA {name}=(\n{rows}\n)"

    return f"""# bash completion for braggscope (made by: braggscope completion bash)
{table("_braggscope_options", options)}
{table("_braggscope_commands", commands)}
{table("_braggscope_choices", choices)}
_braggscope() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" path=braggscope i
    for ((i = 1; i < COMP_CWORD; i++)); do
        [[ -v "_braggscope_options[$path ${{COMP_WORDS[i]}}]" ]] && path="$path ${{COMP_WORDS[i]}}"
    done
    if [[ -v "_braggscope_choices[$path $prev]" ]]; then
        COMPREPLY=($(compgen -W "${{_braggscope_choices[$path $prev]}}" -- "$cur"))
    elif [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "${{_braggscope_options[$path]}}" -- "$cur"))
    else  # nothing here: bash completes file names (complete -o default)
        COMPREPLY=($(compgen -W "${{_braggscope_commands[$path]}}" -- "$cur"))
    fi
}}
complete -o default -o bashdefault -F _braggscope braggscope"""
