// confirmAction asks the operator to confirm an action in a modal dialog
// and resolves to true only when they press its confirm button.

import { $, setText } from './dom.js';

export function confirmAction(title, text, okLabel) {
  const dlg = $('#confirm');
  setText($('#confirm-title'), title);
  setText($('#confirm-text'), text);
  setText($('#confirm-ok'), okLabel);
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
    $('#confirm-cancel').focus();
  });
}
