// Small page elements shared by the dialogue editor and the voice shelf.

/** A "×" button that does `onClick`, labelled for screen readers and tooltips. */
export function removeButton(label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "remove";
  button.textContent = "×";
  button.title = label;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}
